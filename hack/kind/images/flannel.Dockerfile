# flannel's daemon (host-gw backend: every kind node is on one Docker bridge) and the
# flannel CNI plugin, which an init container copies into the node's /opt/cni/bin.
ARG BASE=kubenova.local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables iproute2 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY flanneld /opt/bin/flanneld
COPY flannel /flannel
ENTRYPOINT ["/opt/bin/flanneld"]
