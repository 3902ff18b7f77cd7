#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager from Go modules into a
# cache outside the repository, keyed by version, and print the bin directory.
#
# Why a wrapper module: k8s.io/kubernetes requires every staging repo at v0.0.0 and
# maps them with local replace lines, which a dependant ignores; so we replace each
# staging module with its published v0.<minor>.<patch> (see shared/notes/controlplane.md).
# etcd's server module has replace lines too, hence `go build` in a wrapper, not `go install`.
#
# Honours KUBEBUILDER_ASSETS (envtest's convention): if it already holds the three
# binaries, nothing is built and that directory is printed.
set -euo pipefail

K8S_VERSION="${KUBENOVA_K8S_VERSION:-1.34.4}"
ETCD_VERSION="${KUBENOVA_ETCD_VERSION:-3.6.16}"
CACHE="${KUBENOVA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenova}"
BIN="$CACHE/controlplane/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION/bin"
NEEDED=(etcd kube-apiserver kube-controller-manager)

have_all() {
  local dir="$1" b
  for b in "${NEEDED[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && have_all "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
if have_all "$BIN"; then echo "$BIN"; exit 0; fi

log() { echo "build-controlplane: $*" >&2; }
WORK="$CACHE/controlplane/build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
start=$(date +%s)

build_k8s() {
  local dir="$WORK/k8s-v$K8S_VERSION" staging="0.${K8S_VERSION#1.}" minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init local/kubenova-k8sbin >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every staging module required at v0.0.0 gets its published version.
  awk -v s="$staging" '$1 ~ /^k8s\.io\// && $2=="v0.0.0" {print "replace " $1 " => " $1 " v" s}' \
    "$gomod" | sort -u >> go.mod
  go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  # Pin the version on each package: a bare `go get -tool` would upgrade k8s.io/kubernetes
  # to the newest release while the staging replaces stay on ours.
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" >&2
  # Without these, /version reports v0.0.0 and helm's KubeVersion checks break.
  local ld="-s -w" kv
  for kv in "gitVersion=v$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
            "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ld="$ld -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager >&2
}

build_etcd() {
  local dir="$WORK/etcd-v$ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init local/kubenova-etcdbin >/dev/null 2>&1
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
}

log "building etcd v$ETCD_VERSION and kubernetes v$K8S_VERSION into $BIN (first run only)"
[[ -x "$BIN/etcd" ]] || build_etcd
[[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]] || build_k8s
log "built in $(( $(date +%s) - start ))s"
echo "$(( $(date +%s) - start ))" > "$BIN/../build-seconds"
echo "$BIN"
