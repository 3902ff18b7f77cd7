# kind's node base image, from Debian packages instead of kind's own builds of containerd,
# runc, crictl and the CNI plugins (kind's images/base builds them from GitHub clones, which
# these machines cannot reach). The context (hack/kind/node-image.sh) holds kind's own
# images/base/files from the kind module, with one change: restrict_oom_score_adj = true
# (no CAP_SYS_RESOURCE here, so nothing may lower oom_score_adj; kind does the same for
# rootless nodes), and the ctr shim of hack/kind/ctr-offline, crictl and the preload dir.
ARG BASE=kubenova.local/debian:bookworm
FROM ${BASE}
# Packages first, kind's files second: dpkg must not own /etc/containerd/config.toml.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz fuse-overlayfs nfs-common open-iscsi bash ca-certificates curl jq \
      procps containerd runc containernetworking-plugins \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/* /usr/share/doc/* /usr/share/man/* \
 && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
 && ln -sf /lib/systemd/systemd /sbin/init
COPY files/ /
RUN chmod 0755 /usr/local/bin/* /kind/bin /kind/bin/* \
 && ln -sf /usr/bin/containerd /usr/local/bin/containerd \
 && mkdir -p /opt/cni/bin /etc/kubernetes/manifests && cp -a /usr/lib/cni/* /opt/cni/bin/ \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
