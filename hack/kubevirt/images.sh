#!/usr/bin/env bash
# KubeVirt's five images, from the binaries of binaries.sh, files of the v1.7.0 tree and the
# Dockerfiles in images/, on the Debian base of rootfs.sh; prints one image name a line.
# Docker's image store is the cache: each image is labelled with the hash of its inputs
# (Dockerfile, context, base image id) and rebuilt only when they change.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/images: $*" >&2; }
export DOCKER_BUILDKIT=0  # the legacy builder: Debian's docker.io has no buildx
SRC=$(bash "$HERE/source.sh")
BIN=$(bash "$HERE/binaries.sh")
BASE=$(bash "$HERE/rootfs.sh")
base_id=$(docker image inspect -f '{{.Id}}' "$BASE")

files_of() { # component: the context, as "source destination-name" lines
  case $1 in
    virt-operator|virt-api|virt-controller) echo "$BIN/$1 $1" ;;
    virt-handler) printf '%s\n' "$BIN/virt-handler virt-handler" "$BIN/virt-chroot virt-chroot" ;;
    virt-launcher)
      local b
      for b in virt-launcher virt-launcher-monitor virt-freezer virt-probe virt-tail container-disk; do
        echo "$BIN/$b $b"
      done
      # Where upstream's BUILD.bazel takes them from in the v1.7.0 tree.
      echo "$SRC/cmd/virt-launcher/node-labeller/node-labeller.sh node-labeller.sh"
      echo "$SRC/cmd/virt-launcher/qemu qemu-hook"
      echo "$SRC/cmd/virt-launcher/qemu.conf qemu.conf"
      echo "$SRC/cmd/virt-launcher/virtqemud.conf virtqemud.conf"
      echo "$HERE/images/virtqemud virtqemud" ;;
  esac
}

for c in $KUBEVIRT_COMPONENTS; do
  image="$KUBEVIRT_IMAGE_PREFIX/$c:$KUBEVIRT_IMAGE_TAG"
  ctx=$(mktemp -d "$KUBENOVA_CACHE/kubevirt-context.XXXX")
  while read -r from to; do cp "$from" "$ctx/$to"; done < <(files_of "$c")
  # Upstream's /.version holds the commit (bazel STABLE_BUILD_SCM_REVISION).
  echo "$KUBEVIRT_COMMIT" >"$ctx/.version"
  dockerfile="$HERE/images/$c.Dockerfile"
  key=$(kv_key "$dockerfile" <(echo "$base_id") <(cd "$ctx" && find . -type f | sort | xargs sha256sum))
  if [[ "$(docker image inspect -f '{{index .Config.Labels "io.kubenova.inputs"}}' "$image" 2>/dev/null)" != "$key" ]]; then
    start=$SECONDS
    log "building $image"
    docker build -q --force-rm --label "io.kubenova.inputs=$key" --build-arg "BASE=$BASE" \
      -f "$dockerfile" -t "$image" "$ctx" >/dev/null
    echo "image:$image $((SECONDS - start)) $(docker image inspect -f '{{.Size}}' "$image")" \
      >>"$KUBENOVA_CACHE/kubevirt-timings"
  fi
  rm -rf "$ctx"
  echo "$image"
done
