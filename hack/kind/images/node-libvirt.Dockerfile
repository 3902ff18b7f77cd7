# A kind node that is also a compute host: libvirtd and QEMU from Debian run under the
# node's systemd, as they would on a real node, and kubenova's agent DaemonSet reaches them
# through the chart's hostPath settings (libvirtSocketDir, instancesPath, imagesPath).
# Why the node and not a libvirtd DaemonSet: docs/decisions.md, "kind cluster".
ARG NODE
FROM ${NODE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvirt-daemon-system qemu-system-x86 qemu-utils \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
# QEMU runs as root with no confinement (no AppArmor/SELinux in a kind node), the same
# settings hack/install-libvirt.sh gives the host's libvirtd. Guests are TCG.
# The guests need no libvirt network (no NIC), so the default one does not autostart.
COPY qemu.conf /etc/libvirt/qemu.conf.d-kubenova
RUN cat /etc/libvirt/qemu.conf.d-kubenova >> /etc/libvirt/qemu.conf \
 && rm /etc/libvirt/qemu.conf.d-kubenova \
 && rm -f /etc/libvirt/qemu/networks/autostart/default.xml \
 && mkdir -p /var/lib/kubenova/instances /var/lib/kubenova/images \
 && systemctl enable virtlogd.socket libvirtd.socket libvirtd.service
