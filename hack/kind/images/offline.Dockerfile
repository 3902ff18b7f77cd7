# The base image plus what `kind build node-image` fetches from registries: docker-save
# archives of etcd, CoreDNS, pause and the storage images in /kind/preload, and the ctr
# shim that imports them (hack/kind/ctr-offline).
ARG BASE
FROM ${BASE}
COPY ctr-offline /usr/local/bin/ctr
COPY preload/ /kind/preload/
RUN chmod 0755 /usr/local/bin/ctr
