#!/usr/bin/env bash
# KubeVirt's binaries, built from the tree of source.sh with plain `go build` (upstream
# builds with Bazel inside quay.io/kubevirt/builder, which cannot be pulled here); prints the
# bin directory. Each binary is built once per input hash; a warm run only checks the files.
#
#   KUBENOVA_BUILD_P=2 KUBENOVA_BUILD_NICE=10 hack/kubevirt/binaries.sh   # on a quieter box
# Cold: ~20 min on 2 busy cores (virt-controller alone ~16 min, it compiles most of the
# shared packages); warm rebuilds ~1 min per binary.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/binaries: $*" >&2; }
SRC=$(bash "$HERE/source.sh")
# GOFLAGS empty: the tree is a workspace (go.work), where -mod=mod (as the kind scripts
# export) is refused.
export GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=1

# Go binaries in the images. virt-operator, virt-api and virt-controller are Go only;
# virt-handler, virt-chroot and the launcher side use cgo. Each runs on the Debian base of
# rootfs.sh, so dynamic linking against its glibc is fine (upstream links some statically).
GO_CMDS="cmd/virt-operator cmd/virt-api cmd/virt-controller cmd/virt-handler cmd/virt-chroot
  cmd/virt-launcher cmd/virt-launcher-monitor cmd/virt-freezer cmd/virt-probe cmd/virt-tail
  tools/manifest-templator"
# Tags: `selinux` is upstream's (.bazelrc `--define gotags=selinux`). virt-launcher adds
# libvirt_dlopen: libvirt.org/go/libvirt then dlopen()s the image's libvirt (trixie 11.3)
# instead of linking the host's headers (bookworm 9.0), which would compile every newer
# API as a "not available prior to libvirt X" stub. It also needs no libvirt-dev here.
tags_of() { [[ "$1" == cmd/virt-launcher ]] && echo selinux,libvirt_dlopen || echo selinux; }

# The version every component reports (hack/version.sh: kubevirt::version::ldflags sets
# these four in kubevirt.io/client-go/version). virt-operator compares the versions of what
# it deployed, so all binaries get the same strings. -s -w: smaller images to `kind load`.
ld="-s -w"
for kv in "gitVersion=$KUBEVIRT_VERSION" "gitCommit=$KUBEVIRT_COMMIT" gitTreeState=clean \
          "buildDate=$KUBEVIRT_BUILD_DATE"; do
  ld="$ld -X kubevirt.io/client-go/version.$kv"
done

key=$(kv_key <(echo "$SRC $GO_CMDS $ld $(go version) $(gcc --version | head -1)") "$0")
BIN="$KUBENOVA_CACHE/kubevirt-bin-$KUBEVIRT_VERSION-$key"
mkdir -p "$BIN"
exec 9>"$BIN/.lock"
flock 9

timed() { # name command...: run it, record the wall time in $BIN/timings
  local name=$1 start=$SECONDS
  shift
  log "building $name"
  "$@"
  echo "$name $((SECONDS - start))" >>"$BIN/timings"
}
go_bin() { # package dir (relative to the tree)
  (cd "$SRC" && nice -n "$KUBEVIRT_BUILD_NICE" go build -p "$KUBEVIRT_BUILD_P" \
    -tags "$(tags_of "$1")" -ldflags "$ld" -o "$BIN/$(basename "$1").tmp" "./$1" >&2)
  mv "$BIN/$(basename "$1").tmp" "$BIN/$(basename "$1")"
}
# container-disk runs alone in the containerDisk init container (it only holds the volume
# container alive), so it is static, as in upstream's hack/build-go.sh and BUILD.bazel.
container_disk() {
  nice -n "$KUBEVIRT_BUILD_NICE" gcc -static -O2 -o "$BIN/container-disk.tmp" \
    "$SRC/cmd/container-disk-v2alpha/main.c"
  mv "$BIN/container-disk.tmp" "$BIN/container-disk"
}

for pkg in $GO_CMDS; do
  [[ -x "$BIN/$(basename "$pkg")" ]] || timed "$(basename "$pkg")" go_bin "$pkg"
done
[[ -x "$BIN/container-disk" ]] || timed container-disk container_disk
# Cheap checks that catch a wrong tag or link mode before an image is built from it.
if ldd "$BIN/virt-launcher" 2>/dev/null | grep -q libvirt; then
  log "virt-launcher links libvirt directly: the libvirt_dlopen tag did not take"; exit 1
fi
! ldd "$BIN/container-disk" >/dev/null 2>&1 || { log "container-disk is not static"; exit 1; }
help=$("$BIN/virt-operator" --help 2>&1 || true)  # pflag exits 2 after --help
grep -q -- --dump-install-strategy <<<"$help" \
  || { log "virt-operator has no --dump-install-strategy flag"; exit 1; }
echo "$BIN"
