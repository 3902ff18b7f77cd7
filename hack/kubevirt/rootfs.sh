#!/usr/bin/env bash
# The base of kubenova's KubeVirt images: a Debian minbase root filesystem from debootstrap,
# imported into Docker; prints the image name. Upstream's images are Bazel-assembled CentOS
# Stream RPMs on a quay.io base, neither of which is reachable here, so every image is
# rebuilt on Debian (images/*.Dockerfile). Docker's image store is the cache: the image
# carries a label with the hash of its inputs and is rebuilt only when they change.
# Needs root and debootstrap (hack/docker-engine.sh installs it with Docker).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/rootfs: $*" >&2; }
mkdir -p "$KUBENOVA_CACHE"
exec 9>"$KUBENOVA_CACHE/kubevirt-rootfs.lock"
flock 9

key=$(kv_key <(echo "$DEBIAN_SUITE $DEBIAN_MIRROR") "$0")
have=$(docker image inspect -f '{{index .Config.Labels "io.kubenova.inputs"}}' "$DEBIAN_IMAGE" 2>/dev/null || true)
if [[ "$have" == "$key" ]]; then echo "$DEBIAN_IMAGE"; exit 0; fi

start=$SECONDS
rootfs="$KUBENOVA_CACHE/kubevirt-rootfs-$DEBIAN_SUITE-$key"
rm -rf "$rootfs"
log "debootstrap --variant=minbase $DEBIAN_SUITE (about 1-2 min)"
# bookworm's debootstrap and keyring know trixie; nice: the host's cores are shared.
nice -n "$KUBEVIRT_BUILD_NICE" debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" \
  "$DEBIAN_MIRROR" >&2
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main
EOF
rm -f "$rootfs"/etc/apt/sources.list.d/debian.sources  # trixie's deb822 default, replaced above
# Packages installed later must not start services in a build (there is no init).
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d" && chmod 755 "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# A label cannot be given to `docker import`; a one-line build adds it.
tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE-unlabelled" >/dev/null
echo "FROM $DEBIAN_IMAGE-unlabelled" | DOCKER_BUILDKIT=0 docker build -q --label "io.kubenova.inputs=$key" \
  -t "$DEBIAN_IMAGE" - >/dev/null
docker rmi "$DEBIAN_IMAGE-unlabelled" >/dev/null
rm -rf "$rootfs"
log "$DEBIAN_IMAGE built in $((SECONDS - start))s"
echo "$DEBIAN_IMAGE"
