# virt-launcher: the VM pod's compute container, virt-handler's node-labeller init container
# and the source of /usr/bin/container-disk for containerDisk volumes. Rebuilds upstream's
# image (cmd/virt-launcher/BUILD.bazel: rpm "launcherbase", libvirt 10.10 + QEMU 9.1 from
# CentOS Stream 9) from Debian trixie's libvirt 11.3 + QEMU 10.0, with the deltas that the
# probe in shared/notes/kubevirt-offline.md found and tested (a TCG VM ran, root and uid 107).
ARG BASE
FROM ${BASE}
# qemu 107 first (upstream's passwd/group): qemu.conf runs QEMU as "qemu" and non-root VM
# pods run as 107. Debian's own packages would otherwise hand out dynamic system uids from
# 100 up (and create libvirt-qemu 64055, unused here).
RUN if getent passwd 107 || getent group 107; then echo "uid/gid 107 taken" >&2; exit 1; fi \
 && echo 'qemu:x:107:107:qemu:/home/qemu:/bin/bash' >>/etc/passwd && echo 'qemu:x:107:' >>/etc/group \
 && mkdir -p /home/qemu && chown 107:107 /home/qemu
# libvirtd (no virtqemud in Debian: see the shim), virtlogd, virsh; QEMU with its firmware
# (seabios, ipxe option ROMs for virtio-net, ovmf for EFI); swtpm for vTPM; virtiofsd;
# xorriso for cloud-init/config ISOs; the network tools upstream ships. libcap2-bin: setcap.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-log libvirt-clients \
      qemu-system-x86 qemu-utils seabios ipxe-qemu ovmf swtpm swtpm-tools passt virtiofsd \
      xorriso iproute2 nftables ethtool procps psmisc util-linux dmidecode ca-certificates \
      libcap2-bin \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
# Upstream's libvirt config replaces Debian's; 0644 because a non-root virt-launcher copies
# both into its private dir and Debian installs qemu.conf 0600 root.
COPY qemu.conf virtqemud.conf /etc/libvirt/
COPY qemu-hook /etc/libvirt/hooks/qemu
COPY virtqemud /usr/sbin/virtqemud
COPY virt-launcher virt-launcher-monitor virt-freezer virt-probe virt-tail container-disk \
     node-labeller.sh /usr/bin/
COPY .version /.version
# (Module files carry no modes, so every mode is set here.)
RUN chmod 0644 /etc/libvirt/qemu.conf /etc/libvirt/virtqemud.conf /.version \
 && chmod 0755 /etc/libvirt/hooks/qemu /usr/sbin/virtqemud /usr/bin/virt-launcher \
      /usr/bin/virt-launcher-monitor /usr/bin/virt-freezer /usr/bin/virt-probe /usr/bin/virt-tail \
      /usr/bin/container-disk /usr/bin/node-labeller.sh \
 && setcap cap_net_bind_service=+ep /usr/bin/virt-launcher-monitor \
 && getcap /usr/bin/virt-launcher-monitor | grep -q cap_net_bind_service
# virt-handler resolves the launcher's /var/run through /proc/<pid>/root, so the link must be
# relative (Debian's is /var/run -> /run, which would point into virt-handler's own /run).
RUN rm /var/run && ln -s ../run /var/run \
 && mkdir -p /usr/lib64/qemu-kvm
# KubeVirt looks for RHEL's firmware names in /usr/share/OVMF; Debian has only the 4M builds.
# (SEV/SNP/TDX images, OVMF_CODE.cc.fd etc., are not provided.)
RUN cd /usr/share/OVMF \
 && for l in OVMF_CODE.fd:OVMF_CODE_4M.fd OVMF_VARS.fd:OVMF_VARS_4M.fd \
             OVMF_CODE.secboot.fd:OVMF_CODE_4M.secboot.fd OVMF_VARS.secboot.fd:OVMF_VARS_4M.ms.fd; do \
      test -e "${l#*:}" && ln -sf "${l#*:}" "${l%%:*}" || exit 1; \
    done
# Debian's QEMU is /usr/bin/qemu-system-x86_64, not RHEL's /usr/libexec/qemu-kvm: KubeVirt
# sets no <emulator>, libvirt takes it from its capabilities.
RUN [ "$(id -u qemu)" = 107 ] \
 && for c in libvirtd virtlogd virsh qemu-system-x86_64; do command -v "$c" >/dev/null || exit 1; done \
 && { [ -x /usr/libexec/virtiofsd ] || echo "WARNING: no /usr/libexec/virtiofsd (virtiofs volumes only)" >&2; }
# No USER, as upstream: VM pods set runAsUser (107, or 0 in root mode) themselves, and the
# node-labeller init container (privileged, no runAsUser) must be root for mknod/chmod
# /dev/kvm and `virtqemud -d`. USER 107 here would fail virt-handler's init.
ENTRYPOINT ["/usr/bin/virt-launcher"]
