#!/usr/bin/env bash
# The test guest (hack/build-guest-image.sh: a Debian kernel and a busybox initramfs that
# reports its own sizes and marker on the serial console) as the container image KubeVirt
# boots a kernel from (spec.domain.firmware.kernelBoot.container); prints the image name.
# FROM scratch: KubeVirt copies the files out with its own static container-disk binary.
# Tagged by the hash of the kernel and initrd, so a changed guest is a new tag.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
GUEST=$(bash "$HERE/../build-guest-image.sh")
image="kubenova.local/guest-kernel:$(kv_key "$GUEST/vmlinuz" "$GUEST/initrd.img")"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$ctx/"
  printf 'FROM scratch\nCOPY vmlinuz initrd.img /boot/\n' >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
fi
echo "$image"
