# virt-handler (DaemonSet, privileged, root): upstream's image (cmd/virt-handler/BUILD.bazel)
# is the rpm "handlerbase" set (iproute, nftables, qemu-img, xorriso, util-linux, procps-ng,
# psmisc, tar, selinux utils, passt's passt-repair), /etc/passwd+group with root and qemu 107,
# its nsswitch.conf, /.version, /usr/bin/virt-handler and /usr/bin/virt-chroot. Debian's
# equivalents below; no SELinux utilities (kind nodes have no SELinux).
ARG BASE
FROM ${BASE}
# qemu 107 before any package: Debian packages create system users with dynamic uids from
# 100 up, and one could otherwise take 107. virt-handler chowns VM files to 107.
RUN if getent passwd 107 || getent group 107; then echo "uid/gid 107 taken" >&2; exit 1; fi \
 && echo 'qemu:x:107:107:qemu:/:/bin/bash' >>/etc/passwd && echo 'qemu:x:107:' >>/etc/group
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 nftables qemu-utils xorriso util-linux mount procps psmisc tar passt ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && { command -v passt-repair >/dev/null || echo "WARNING: no passt-repair (passt migration only)" >&2; }
COPY .version /.version
COPY virt-handler virt-chroot /usr/bin/
RUN chmod 0755 /usr/bin/virt-handler /usr/bin/virt-chroot && chmod 0644 /.version \
 && [ "$(id -u qemu)" = 107 ]
ENTRYPOINT ["/usr/bin/virt-handler"]
