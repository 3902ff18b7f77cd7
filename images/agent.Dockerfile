# The kubenova node agent, with the libvirt driver. Build from the repository root:
#   docker build -f images/agent.Dockerfile -t kubenova/agent:dev .
# libvirt-python 9.0.0 compiles against the libvirt of Debian bookworm (libvirt-dev,
# pkg-config, a C compiler): only the build stage has them; the runtime stage gets the
# libvirt client library and qemu-img (disk create, resize, info). libvirtd and QEMU run
# on the host; the agent reaches them through the mounted socket.

ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
# Left behind dangling by the legacy builder: hack/kind-e2e.sh prunes old ones by it.
LABEL io.kubenova.stage=build
# Python's headers: the public image has them under /usr/local; a base with Debian's own
# Python (sys.prefix /usr, hack/kind/images/python.Dockerfile) gets them from python3-dev.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
 && if [ "$(python -c 'import sys; print(sys.prefix)')" = /usr ]; then \
      apt-get install -y --no-install-recommends python3-dev; fi \
 && rm -rf /var/lib/apt/lists/*
# Extra CAs for the build stage only (images/build-ca/README.md).
COPY images/build-ca/ /usr/local/share/ca-certificates/kubenova-build/
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN update-ca-certificates >/dev/null
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/kubenova \
 && /opt/kubenova/bin/pip install --no-cache-dir --disable-pip-version-check '.[libvirt]'

FROM ${BASE}
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
