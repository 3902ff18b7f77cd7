#!/usr/bin/env bash
# kubevirt-operator.yaml and kubevirt-cr.yaml for kubenova's images, rendered with v1.7.0's
# own tools/manifest-templator as hack/build-manifests.sh does (no Bazel); prints the
# directory holding both. Only the operator and the CR are applied: virt-operator generates
# virt-api, virt-controller, virt-handler, their RBAC, certificates and webhooks itself (an
# install-strategy Job running the operator image writes them to a ConfigMap).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/manifests: $*" >&2; }
SRC=$(bash "$HERE/source.sh")
TEMPLATOR="$(bash "$HERE/binaries.sh")/manifest-templator"

# Pass 2 flags, from tools/manifest-templator/manifest-templator.go. --kubevirt-logo-path
# is not optional: --process-vars always reads it (os.Open("") panics). Unknown flags are
# ignored there (ParseErrorsWhitelist), so a typo would pass silently: keep to this list.
# --infra-replicas=1: one virt-api and one virt-controller (default 2) on small clusters.
# The operator names every component image after its own, so no --virt-*-image overrides.
# HostDisk: kubenova's KubeVirt driver keeps each guest's disk as a raw file on its node,
# which the node's agent sets aside, grows and transfers as the libvirt driver does
# (docs/kubevirt.md says why not a containerDisk or a PVC).
VARS=(--process-vars --namespace="$KUBEVIRT_NAMESPACE" --cdi-namespace=cdi
  --csv-namespace=placeholder --csv-version="${KUBEVIRT_VERSION#v}"
  --container-prefix="$KUBEVIRT_IMAGE_PREFIX" --container-tag="$KUBEVIRT_IMAGE_TAG" --image-prefix=
  --image-pull-policy=IfNotPresent --verbosity=2 --infra-replicas=1 --test-image-replicas=0
  --feature-gates=HostDisk --package-name=kubevirt --kubevirt-logo-path=assets/kubevirt_logo.png)

key=$(kv_key "$TEMPLATOR" "$SRC/manifests/release/kubevirt-operator.yaml.in" \
  "$SRC/manifests/release/kubevirt-cr.yaml.in" <(cat "$SRC"/manifests/generated/*) \
  <(printf '%s\n' "${VARS[@]}") "$0")
OUT="$KUBENOVA_CACHE/kubevirt-manifests-$KUBEVIRT_VERSION-$key"
if [[ -f "$OUT/kubevirt-operator.yaml" && -f "$OUT/kubevirt-cr.yaml" ]]; then echo "$OUT"; exit 0; fi
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"

cd "$SRC"  # the logo path is relative, as in upstream's script
for m in kubevirt-operator kubevirt-cr; do
  # Pass 1 inlines manifests/generated/* (CRD, operator RBAC, the CR body), pass 2 the values.
  "$TEMPLATOR" --process-files --generated-manifests-dir=manifests/generated/ \
    --input-file="manifests/release/$m.yaml.in" >"$OUT.tmp/$m.yaml.in"
  "$TEMPLATOR" "${VARS[@]}" --input-file="$OUT.tmp/$m.yaml.in" >"$OUT.tmp/$m.yaml"
  rm "$OUT.tmp/$m.yaml.in"
  # text/template prints "<no value>" for data it lacks: a flag this list misses.
  ! grep -n '<no value>\|{{' "$OUT.tmp/$m.yaml" >&2 || { log "$m.yaml: unrendered fields above"; exit 1; }
done

# Software emulation (TCG): this host's KVM is PVM (no usable hardware virtualisation for
# ordinary guests, no vhost-net). useEmulation stops virt-controller from requesting
# devices.kubevirt.io/kvm, adds --allow-emulation to virt-launcher, and makes domains type
# "qemu". Inserted under the rendered developerConfiguration (4 spaces, its keys 6).
awk '{print} /^    developerConfiguration:$/ {print "      useEmulation: true"; n++}
     END {exit n == 1 ? 0 : 1}' "$OUT.tmp/kubevirt-cr.yaml" >"$OUT.tmp/cr" \
  || { log "kubevirt-cr.yaml: no single developerConfiguration to patch"; exit 1; }
mv "$OUT.tmp/cr" "$OUT.tmp/kubevirt-cr.yaml"
grep -q "image: $KUBEVIRT_IMAGE_PREFIX/virt-operator:$KUBEVIRT_IMAGE_TAG" "$OUT.tmp/kubevirt-operator.yaml" \
  || { log "kubevirt-operator.yaml does not run $KUBEVIRT_IMAGE_PREFIX/virt-operator:$KUBEVIRT_IMAGE_TAG"; exit 1; }
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
log "rendered: $(grep -c '^kind:' "$OUT/kubevirt-operator.yaml") objects in kubevirt-operator.yaml"
echo "$OUT"
