#!/usr/bin/env bash
# Every binary a kind cluster needs, built from the Go module proxy (and one C file) into a
# cache outside the repository, keyed by versions: kind itself, crictl, Kubernetes' node and
# control-plane commands, etcd, CoreDNS, local-path-provisioner, flannel and its CNI plugin,
# and pause. Each is built once; a warm run only checks that the files are there. Prints
# the bin directory. Versions come from hack/kind/versions.sh.
#
# The Kubernetes commands are built the same way (flags, tags, -trimpath) as the local
# control plane of hack/build-controlplane.sh, so the packages they share come from the
# Go build cache.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
BIN="$KIND_CACHE/bin"
WORK="$KIND_CACHE/build"
log() { echo "kind/build-binaries: $*" >&2; }
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$BIN" "$WORK"
# Parallel callers (test workers) on a cold cache: one builds, the others wait.
exec 9>"$KIND_CACHE/.build.lock"
flock 9

timed() { # name command...: run, and record how long it took in $BIN/../timings
  local name=$1 start=$SECONDS
  shift
  log "building $name (once per version)"
  "$@"
  echo "$name $((SECONDS - start))" >>"$KIND_CACHE/timings"
}

# One binary per version: the file name carries it, so a version bump rebuilds only it.
have() { [[ -x "$BIN/$1" ]]; }

go_install() { # output-name module/path@version [ldflags]
  local out=$1 pkg=$2 ld=${3:-"-s -w"} tmp
  tmp=$(mktemp -d "$WORK/gobin.XXXX")
  GOBIN="$tmp" go install -trimpath -ldflags "$ld" "$pkg" >&2
  mv "$tmp"/* "$BIN/$out"
  rmdir "$tmp"
}

wrapper_module() { # dir: a throwaway module to `go get -tool` commands into
  rm -rf "$1" && mkdir -p "$1" && cd "$1"
  go mod init "local/kubenova-$(basename "$1")" >/dev/null 2>&1
}

build_kubernetes() {
  local dir="$WORK/k8s-v$K8S_VERSION" staging="0.${K8S_VERSION#1.}" minor gomod ld kv cmd
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  wrapper_module "$dir"
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | jq -r .GoMod)
  # k8s.io/kubernetes requires its staging modules at v0.0.0 through replace lines that a
  # dependant ignores: replace each with its published version.
  awk -v s="$staging" '$1 ~ /^k8s\.io\// && $2=="v0.0.0" {print "replace " $1 " => " $1 " v" s}' \
    "$gomod" | sort -u >>go.mod
  go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  local pkgs=()
  for cmd in $K8S_COMMANDS; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  go get -tool "${pkgs[@]/%/@v$K8S_VERSION}" >&2
  ld="-s -w"
  for kv in "gitVersion=v$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
            "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ld="$ld -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$dir/out/" "${pkgs[@]}" >&2
  for cmd in $K8S_COMMANDS; do mv "$dir/out/$cmd" "$BIN/$cmd-v$K8S_VERSION"; done
}

build_etcd() {
  local dir="$WORK/etcd-v$ETCD_VERSION"
  wrapper_module "$dir"
  # etcd's server module has replace lines of its own: `go build` in a wrapper module.
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@v$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd-v$ETCD_VERSION" go.etcd.io/etcd/server/v3 >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcdctl-v$ETCD_VERSION" go.etcd.io/etcd/etcdctl/v3 >&2
}

build_flanneld() {
  local dir="$WORK/flannel-$FLANNEL_VERSION"
  wrapper_module "$dir"
  # flannel requires tencentcloud-sdk-go's common module at a version the proxy refuses;
  # a later one of the same v1 API is served. The udp backend needs cgo (Debian's glibc,
  # which the flannel image has too).
  go mod edit -replace "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common@$TENCENT_COMMON_VERSION"
  go get -tool "github.com/flannel-io/flannel@$FLANNEL_VERSION" >&2
  CGO_ENABLED=1 go build -trimpath -o "$BIN/flanneld-$FLANNEL_VERSION" \
    -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
    github.com/flannel-io/flannel >&2
}

build_pause() {
  local src
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/build/pause/linux/pause.c"
  [[ -f "$src" ]] || go mod download "k8s.io/kubernetes@v$K8S_VERSION"
  gcc -Os -static -DVERSION="v$PAUSE_VERSION-kubenova" -o "$BIN/pause-v$PAUSE_VERSION" "$src"
}

have "kind-$KIND_VERSION" || timed kind go_install "kind-$KIND_VERSION" "sigs.k8s.io/kind@$KIND_VERSION"
# `build-binaries.sh kind`: only kind (a host that pulls kind's public images needs no more).
if [[ "${1:-}" == kind ]]; then echo "$BIN"; exit 0; fi
have "crictl-$CRICTL_VERSION" || timed crictl go_install "crictl-$CRICTL_VERSION" \
  "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
  "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
need_k8s=0
for cmd in $K8S_COMMANDS; do have "$cmd-v$K8S_VERSION" || need_k8s=1; done
((need_k8s == 0)) || timed kubernetes build_kubernetes
have "etcd-v$ETCD_VERSION" || timed etcd build_etcd
have "coredns-$COREDNS_VERSION" || timed coredns go_install "coredns-$COREDNS_VERSION" \
  "github.com/coredns/coredns@$COREDNS_VERSION"
have "local-path-provisioner-$LOCAL_PATH_VERSION" || timed local-path-provisioner go_install \
  "local-path-provisioner-$LOCAL_PATH_VERSION" "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
have "flanneld-$FLANNEL_VERSION" || timed flanneld build_flanneld
have "flannel-cni-$FLANNEL_CNI_VERSION" || timed flannel-cni go_install "flannel-cni-$FLANNEL_CNI_VERSION" \
  "github.com/containernetworking/plugins/plugins/meta/flannel@$FLANNEL_CNI_VERSION"
have "pause-v$PAUSE_VERSION" || timed pause build_pause
echo "$BIN"
