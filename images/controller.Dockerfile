# The kubenova controller. Build from the repository root:
#   docker build -f images/controller.Dockerfile -t kubenova/controller:dev .
# Pure Python: the build stage installs the package and its pinned dependencies into a
# virtual environment; the runtime stage is the same base with that environment only.

ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
# Left behind dangling by the legacy builder: hack/kind-e2e.sh prunes old ones by it.
LABEL io.kubenova.stage=build
# Extra CAs for the build stage only (images/build-ca/README.md).
COPY images/build-ca/ /usr/local/share/ca-certificates/kubenova-build/
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN update-ca-certificates >/dev/null
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/kubenova \
 && /opt/kubenova/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM ${BASE}
COPY --from=build /opt/kubenova /opt/kubenova
ENV PATH=/opt/kubenova/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root (the chart runs it with a read-only root filesystem as 65532 too).
USER 65532:65532
ENTRYPOINT ["kubenova"]
CMD ["controller"]
