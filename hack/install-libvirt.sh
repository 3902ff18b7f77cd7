#!/usr/bin/env bash
# Install libvirt + QEMU from Debian and start libvirtd/virtlogd as root (no systemd here).
# Idempotent: installs what is missing, starts what is not running, waits for the socket.
# Facts from ../shared/design.md §5: libvirt 9.0 + QEMU 7.2 (bookworm) work here as root;
# guests run under TCG (KVM guests hung at boot on these machines).
set -euo pipefail

PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev
          pkg-config busybox-static cpio)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-libvirt: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/qemu
# QEMU runs as root so it can open disks under any instancesPath (tests use temp dirs);
# no AppArmor/SELinux confinement is available in this sandbox.
conf=/etc/libvirt/qemu.conf
grep -q '^user = "root"' "$conf" || printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' >> "$conf"

pgrep -x virtlogd >/dev/null || virtlogd -d
if ! pgrep -x libvirtd >/dev/null; then
  libvirtd -d
fi
for _ in $(seq 1 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.1
done
echo "install-libvirt: libvirtd did not answer on qemu:///system" >&2
exit 1
