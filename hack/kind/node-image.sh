#!/usr/bin/env bash
# The images of a kubenova kind cluster, built once and reused (Docker's image store is
# the cache; each image carries a label with the hash of its inputs and is rebuilt only
# when they change). Prints, as shell assignments for the caller to eval:
#   NODE_IMAGE=...   kind node image with libvirtd + QEMU (hack/kind/images/node-libvirt)
#   PYTHON_BASE=...  base of kubenova's controller and agent images
#   CNI=flannel|kindnet
#
# KUBENOVA_KIND_IMAGES chooses where the images come from:
#   public  kind's kindest/node and Docker Hub's python image, pulled (kind's own CNI);
#   local   everything built here: a Debian base from debootstrap, kind's base image from
#           Debian packages, Kubernetes, etcd, CoreDNS, pause, local-path-provisioner and
#           flannel from the Go module proxy, then `kind build node-image`;
#   auto    (default) public when the node image can be pulled, else local.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
MODE="${KUBENOVA_KIND_IMAGES:-auto}"
log() { echo "kind/node-image: $*" >&2; }
export DOCKER_BUILDKIT=0  # the legacy builder: Debian's docker.io has no buildx
mkdir -p "$KIND_CACHE"
exec 8>"$KIND_CACHE/.images.lock"
flock 8

key_of() { cat "$@" | sha256sum | cut -c1-12; }
current() { # image key: the image exists and was built from these inputs
  [[ "$(docker image inspect -f '{{index .Config.Labels "io.kubenova.inputs"}}' "$1" 2>/dev/null)" == "$2" ]]
}
build() { # image key context dockerfile [build-arg...]
  local image=$1 key=$2 context=$3 dockerfile=$4 start=$SECONDS
  shift 4
  current "$image" "$key" && return 0
  log "building $image"
  docker build -q --force-rm --label "io.kubenova.inputs=$key" -f "$dockerfile" -t "$image" "$@" "$context" >/dev/null
  echo "image:$image $((SECONDS - start))" >>"$KIND_CACHE/timings"
}
scratch_image() { # image binary path-in-image [entrypoint]
  local image=$1 binary=$2 path=$3 entrypoint=${4:-$3} dir
  dir=$(mktemp -d "$KIND_CACHE/context.XXXX")
  cp "$binary" "$dir/binary"
  printf 'FROM scratch\nENV PATH=/usr/local/bin:/bin\nCOPY binary %s\nENTRYPOINT ["%s"]\n' \
    "$path" "$entrypoint" >"$dir/Dockerfile"
  build "$image" "$(key_of "$dir/Dockerfile" "$binary")" "$dir" "$dir/Dockerfile"
  rm -rf "$dir"
}

if [[ "$MODE" == auto ]]; then
  if timeout 120 docker pull -q "$PUBLIC_NODE_IMAGE" >/dev/null 2>&1; then MODE=public; else MODE=local; fi
  log "KUBENOVA_KIND_IMAGES=auto: using $MODE images"
fi

node_variant() { # kind node image -> the same with libvirtd + QEMU
  local node=$1 key image
  key=$(key_of "$HERE/images/node-libvirt.Dockerfile" "$HERE/images/qemu.conf" <(echo "$node"))
  image="kubenova.local/kind-node-libvirt:v$K8S_VERSION-$key"
  build "$image" "$key" "$HERE/images" "$HERE/images/node-libvirt.Dockerfile" --build-arg "NODE=$node"
  echo "$image"
}

if [[ "$MODE" == public ]]; then
  docker pull -q python:3.11-slim-bookworm >/dev/null
  echo "NODE_IMAGE=$(node_variant "$PUBLIC_NODE_IMAGE")"
  echo "PYTHON_BASE=python:3.11-slim-bookworm"
  echo "CNI=kindnet"
  echo "KIND=$(bash "$HERE/build-binaries.sh" kind)/kind-$KIND_VERSION"
  exit 0
fi
[[ "$MODE" == local ]] || { log "KUBENOVA_KIND_IMAGES must be public, local or auto (not $MODE)"; exit 2; }

# --- a Debian base image, from debootstrap --------------------------------------------------
DEBIAN=kubenova.local/debian:bookworm
if ! docker image inspect "$DEBIAN" >/dev/null 2>&1; then
  log "building $DEBIAN with debootstrap (once)"
  start=$SECONDS
  rootfs=$(mktemp -d "$KIND_CACHE/rootfs.XXXX")
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$DEBIAN" >/dev/null
  rm -rf "$rootfs"
  echo "image:$DEBIAN $((SECONDS - start))" >>"$KIND_CACHE/timings"
fi

BIN=$(bash "$HERE/build-binaries.sh")
KIND="$BIN/kind-$KIND_VERSION"
KIND_SRC="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION"
[[ -d "$KIND_SRC/images/base/files" ]] || go mod download "sigs.k8s.io/kind@$KIND_VERSION"

# --- the images kubeadm and kind expect, under their upstream names -------------------------
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  scratch_image "registry.k8s.io/$cmd:v$K8S_VERSION" "$BIN/$cmd-v$K8S_VERSION" "/usr/local/bin/$cmd"
done
ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
cp "$BIN/kube-proxy-v$K8S_VERSION" "$ctx/kube-proxy"
build "registry.k8s.io/kube-proxy:v$K8S_VERSION" \
  "$(key_of "$HERE/images/kube-proxy.Dockerfile" "$ctx/kube-proxy")" "$ctx" "$HERE/images/kube-proxy.Dockerfile"
rm -rf "$ctx"
scratch_image "registry.k8s.io/pause:$PAUSE_VERSION" "$BIN/pause-v$PAUSE_VERSION" /pause
docker tag "registry.k8s.io/pause:$PAUSE_VERSION" "$SANDBOX_IMAGE"
ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
cp "$BIN/etcd-v$ETCD_VERSION" "$ctx/etcd" && cp "$BIN/etcdctl-v$ETCD_VERSION" "$ctx/etcdctl"
printf 'FROM scratch\nENV PATH=/usr/local/bin:/bin\nCOPY etcd etcdctl /usr/local/bin/\nENTRYPOINT ["/usr/local/bin/etcd"]\n' >"$ctx/Dockerfile"
build "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$(key_of "$ctx"/*)" "$ctx" "$ctx/Dockerfile"
rm -rf "$ctx"
scratch_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$BIN/coredns-$COREDNS_VERSION" /coredns
scratch_image "$LOCAL_PATH_IMAGE" "$BIN/local-path-provisioner-$LOCAL_PATH_VERSION" \
  /usr/local/bin/local-path-provisioner
# The storage helper pod runs sh scripts: Debian's static busybox.
ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
cp /bin/busybox "$ctx/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n' >"$ctx/Dockerfile"
build "$LOCAL_PATH_HELPER_IMAGE" "$(key_of "$ctx"/*)" "$ctx" "$ctx/Dockerfile"
rm -rf "$ctx"
ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
cp "$BIN/flanneld-$FLANNEL_VERSION" "$ctx/flanneld" && cp "$BIN/flannel-cni-$FLANNEL_CNI_VERSION" "$ctx/flannel"
build "$FLANNEL_IMAGE" "$(key_of "$HERE/images/flannel.Dockerfile" "$ctx"/*)" "$ctx" "$HERE/images/flannel.Dockerfile"
rm -rf "$ctx"
build kubenova.local/python:3.11-bookworm "$(key_of "$HERE/images/python.Dockerfile")" \
  "$HERE/images" "$HERE/images/python.Dockerfile"

# --- kind's base image from Debian packages, then its offline variant -------------------------
base_key=$(key_of "$HERE/images/base.Dockerfile" "$HERE/images/offline.Dockerfile" "$HERE/ctr-offline" \
  "$BIN/crictl-$CRICTL_VERSION" <(echo "$KIND_VERSION"))
if ! current "kubenova.local/kind-base-offline:$KIND_VERSION" "$base_key"; then
  ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
  cp -r "$KIND_SRC/images/base/files" "$ctx/files" && chmod -R u+w "$ctx/files"
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$ctx/files/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$ctx/files/etc/containerd/config.toml"
  cp "$BIN/crictl-$CRICTL_VERSION" "$ctx/files/usr/local/bin/crictl"
  build "kubenova.local/kind-base:$KIND_VERSION" "$base_key" "$ctx" "$HERE/images/base.Dockerfile"
  rm -rf "$ctx"
  ctx=$(mktemp -d "$KIND_CACHE/context.XXXX")
  mkdir "$ctx/preload"
  cp "$HERE/ctr-offline" "$ctx/ctr-offline"
  for image in "$SANDBOX_IMAGE" "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" \
      "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$LOCAL_PATH_IMAGE" "$LOCAL_PATH_HELPER_IMAGE"; do
    docker save "$image" -o "$ctx/preload/$(printf %s "$image" | tr '/:@' '___').tar"
  done
  echo "$KINDNETD_IMAGE" >"$ctx/preload/skip"
  build "kubenova.local/kind-base-offline:$KIND_VERSION" "$base_key" "$ctx" "$HERE/images/offline.Dockerfile" \
    --build-arg "BASE=kubenova.local/kind-base:$KIND_VERSION"
  rm -rf "$ctx"
fi

# --- kind build node-image from a release-style Kubernetes tarball ----------------------------
node_key=$(key_of <(echo "$base_key $K8S_VERSION") "$BIN/kubelet-v$K8S_VERSION" "$BIN/kubeadm-v$K8S_VERSION")
NODE="kubenova.local/kind-node:v$K8S_VERSION-$node_key"
if ! docker image inspect "$NODE" >/dev/null 2>&1; then
  start=$SECONDS
  log "kind build node-image $NODE"
  work=$(mktemp -d "$KIND_CACHE/node.XXXX")
  server="$work/kubernetes/server/bin"
  mkdir -p "$server"
  printf 'v%s' "$K8S_VERSION" >"$work/kubernetes/version"
  for cmd in kubeadm kubelet kubectl; do cp "$BIN/$cmd-v$K8S_VERSION" "$server/$cmd"; done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    docker save "registry.k8s.io/$cmd:v$K8S_VERSION" -o "$server/$cmd.tar"
  done
  tar -C "$work" -c kubernetes | gzip -1 >"$work/kubernetes-server-linux-amd64.tar.gz"
  rm -rf "$work/kubernetes"
  # kind tries to pull the base image first (4 retries, ignored): it is local.
  TMPDIR="$work" "$KIND" build node-image --type file "$work/kubernetes-server-linux-amd64.tar.gz" \
    --base-image "kubenova.local/kind-base-offline:$KIND_VERSION" --image "$NODE" >&2
  rm -rf "$work"
  echo "image:$NODE $((SECONDS - start))" >>"$KIND_CACHE/timings"
fi

echo "NODE_IMAGE=$(node_variant "$NODE")"
echo "PYTHON_BASE=kubenova.local/python:3.11-bookworm"
echo "CNI=flannel"
echo "FLANNEL_IMAGE=$FLANNEL_IMAGE"
echo "KIND=$KIND"
