# The kubenova node agent, with the libvirt driver. Build from the repository root:
#   docker build -f images/agent.Dockerfile -t kubenova/agent:dev .
# libvirt-python 9.0.0 compiles against the libvirt of Debian bookworm (libvirt-dev,
# pkg-config, a C compiler): only the build stage has them; the runtime stage gets the
# libvirt client library and qemu-img (disk create, resize, info). libvirtd and QEMU run
# on the host; the agent reaches them through the mounted socket.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/kubenova \
 && /opt/kubenova/bin/pip install --no-cache-dir --disable-pip-version-check '.[libvirt]'

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 qemu-utils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/kubenova /opt/kubenova
ENV PATH=/opt/kubenova/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# No USER: with the libvirt driver the agent needs root for libvirtd's socket and the
# host's instance directories (the chart drops every capability but the file ones); with
# the fake driver the chart runs it as 65532.
ENTRYPOINT ["kubenova"]
CMD ["agent"]
