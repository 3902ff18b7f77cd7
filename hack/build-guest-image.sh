#!/usr/bin/env bash
# Build the tiny test guest from Debian packages and cache it outside the repository:
# a Debian kernel (direct kernel boot) and a busybox-static initramfs whose init prints
#   KUBENOVA-GUEST cpus=N memtotal_kib=N disk_sectors=N marker=TEXT boots=N
# to the serial console (TEXT is read from the first bytes of the root disk /dev/vda; N of
# boots is a counter the guest keeps in the disk's sector at 1 MiB and bumps each boot).
# Prints the image directory (vmlinuz, initrd.img), which is what Instance spec.image names.
set -euo pipefail

CACHE="${KUBENOVA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenova}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# The cache key covers the init and this script (its module list).
INIT_SUM=$(cat "$HERE/guest/init" "$0" | sha256sum | cut -c1-12)
OUT="$CACHE/guest/busybox-$INIT_SUM"
# virtio for the disk; button (the ACPI power button) and evdev (its input events) so the
# guest's acpid powers off on `virsh shutdown`: graceful power-off is real, not a timeout;
# virtio_mem for memory a live resize plugs in (and takes back on a live revert).
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_mem button evdev"
if [[ -f "$OUT/vmlinuz" && -f "$OUT/initrd.img" ]]; then echo "$OUT"; exit 0; fi
# Parallel test workers build at once on a cold cache: one builds, the others wait for it.
mkdir -p "$CACHE/guest"
exec 9>"$CACHE/guest/.lock"
flock 9
if [[ -f "$OUT/vmlinuz" && -f "$OUT/initrd.img" ]]; then echo "$OUT"; exit 0; fi

command -v busybox >/dev/null || { apt-get update -qq; apt-get install -y -qq busybox-static cpio >/dev/null; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# The newest bookworm kernel image package (linux-image-6.1.0-N-amd64).
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z "$KPKG" ]]; then apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); fi
apt-get download -qq -o APT::Sandbox::User=root "$KPKG" >/dev/null
dpkg-deb -x ./*.deb kernel
KVER=$(ls kernel/lib/modules)
mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/etc
cp "$(command -v busybox)" root/bin/busybox
echo "$MODULES" > root/etc/modules
for m in $MODULES; do
  f=$(find "kernel/lib/modules/$KVER" -name "$m.ko*" | head -1)
  [[ -n "$f" ]] || continue  # built into this kernel
  case "$f" in
    *.xz) xz -dc "$f" > "root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "root/lib/modules/$m.ko" ;;
    *) cp "$f" "root/lib/modules/$m.ko" ;;
  esac
done
install -m 0755 "$HERE/guest/init" root/init
mkdir -p "$OUT.tmp"
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > "$OUT.tmp/initrd.img"
cp "kernel/boot/vmlinuz-$KVER" "$OUT.tmp/vmlinuz"
echo "$KVER" > "$OUT.tmp/kernel-version"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "$OUT"
