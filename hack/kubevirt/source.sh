#!/usr/bin/env bash
# KubeVirt's source as a tree `go build` accepts, from the Go module proxy; prints its path.
#
# Why a copy: the kubevirt.io/kubevirt module zip leaves out staging/src/kubevirt.io/{api,
# client-go} (nested modules, zipped separately), yet its go.mod and go.work point there
# (`replace kubevirt.io/api => ./staging/src/kubevirt.io/api`). The module cache is read-only,
# so the module goes to a writable tree and the published kubevirt.io/api and client-go of the
# same version fill staging/. go.mod, go.sum and go.work are then used unchanged.
# Idempotent: a finished tree has a stamp file; a run without one starts over.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/source: $*" >&2; }
export GOTOOLCHAIN=local GOFLAGS=
mkdir -p "$KUBENOVA_CACHE"

# Outside any module, so a go.mod or go.work of the caller's directory is not consulted.
json=$(cd / && go mod download -json "kubevirt.io/kubevirt@$KUBEVIRT_VERSION" \
  "kubevirt.io/api@$KUBEVIRT_VERSION" "kubevirt.io/client-go@$KUBEVIRT_VERSION") || true
field() { jq -rs --arg p "$1" ".[] | select(.Path == \$p) | $2" <<<"$json"; }
if jq -se 'any(.[]; .Error)' <<<"$json" >/dev/null; then
  log "go mod download failed: $(jq -rs '[.[] | .Error // empty] | join("; ")' <<<"$json")"
  exit 1
fi
commit=$(field kubevirt.io/kubevirt .Origin.Hash)
if [[ "$commit" != "$KUBEVIRT_COMMIT" ]]; then
  log "kubevirt.io/kubevirt@$KUBEVIRT_VERSION is commit $commit, versions.sh says $KUBEVIRT_COMMIT"
  exit 1
fi

# The key: the three modules' checksums and this script.
key=$(kv_key <(jq -rs '.[] | .Path + " " + .Sum' <<<"$json") "$0")
TREE="$KUBENOVA_CACHE/kubevirt-src-$KUBEVIRT_VERSION-$key"
STAMP="$TREE/.kubenova-source"
exec 9>"$TREE.lock"
flock 9  # parallel callers: one copies, the others wait and reuse it
if [[ -f "$STAMP" ]]; then echo "$TREE"; exit 0; fi

log "preparing $TREE"
rm -rf "$TREE" "$TREE.tmp"
cp -r "$(field kubevirt.io/kubevirt .Dir)" "$TREE.tmp"
chmod -R u+w "$TREE.tmp"  # module cache files are read-only
staging="$TREE.tmp/staging/src/kubevirt.io"
for mod in api client-go; do
  [[ ! -e "$staging/$mod" ]] || { log "$staging/$mod exists in the module zip: recipe out of date"; exit 1; }
  cp -r "$(field "kubevirt.io/$mod" .Dir)" "$staging/$mod"
  chmod -R u+w "$staging/$mod"
  grep -qx "module kubevirt.io/$mod" "$staging/$mod/go.mod"
done
# Sanity: the files the image and manifest scripts take from the tree.
for f in go.work cmd/container-disk-v2alpha/main.c cmd/virt-launcher/node-labeller/node-labeller.sh \
    cmd/virt-launcher/qemu cmd/virt-launcher/qemu.conf cmd/virt-launcher/virtqemud.conf \
    tools/manifest-templator/manifest-templator.go manifests/release/kubevirt-operator.yaml.in \
    manifests/release/kubevirt-cr.yaml.in manifests/generated/kv-resource.yaml assets/kubevirt_logo.png \
    staging/src/kubevirt.io/client-go/version/base.go; do
  [[ -f "$TREE.tmp/$f" ]] || { log "missing $f in the $KUBEVIRT_VERSION tree"; exit 1; }
done
mv "$TREE.tmp" "$TREE"
jq -rs '.[] | .Path + "@" + .Version + " " + .Sum' <<<"$json" >"$STAMP"
log "ready ($(du -sh "$TREE" | cut -f1))"
echo "$TREE"
