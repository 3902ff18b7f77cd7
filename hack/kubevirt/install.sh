#!/usr/bin/env bash
# KubeVirt into a running kind cluster (hack/kind/cluster.sh create): its images loaded
# into every node (there is no registry), the operator applied, then the KubeVirt CR;
# waits until the CR is Available. Prints the namespace.
#   KIND=... KUBECONFIG=... hack/kubevirt/install.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
log() { echo "kubevirt/install: $*" >&2; }
: "${KUBECONFIG:?}" "${KIND:?}"
CLUSTER="${KUBENOVA_KIND_CLUSTER:-kubenova}"
mapfile -t images < <(bash "$HERE/images.sh")
MANIFESTS=$(bash "$HERE/manifests.sh")

for image in "${images[@]}"; do
  # kind skips nodes that already hold this image id. virt-launcher goes to every node:
  # virt-handler's init container and every VM pod run it.
  "$KIND" load docker-image --name "$CLUSTER" "$image" >&2
done
kubectl apply -f "$MANIFESTS/kubevirt-operator.yaml" >&2
kubectl -n "$KUBEVIRT_NAMESPACE" rollout status deployment/virt-operator --timeout=5m >&2
kubectl apply -f "$MANIFESTS/kubevirt-cr.yaml" >&2
# The operator runs its install-strategy Job, then virt-api, virt-controller and the
# virt-handler DaemonSet (whose node-labeller init container is the first real test of the
# launcher image in a node). Cold, expect several minutes on 2 cores.
if ! kubectl -n "$KUBEVIRT_NAMESPACE" wait kv/kubevirt --for condition=Available --timeout=20m >&2; then
  kubectl -n "$KUBEVIRT_NAMESPACE" get kv,pods -o wide >&2 || true
  log "KubeVirt did not become Available (see the pods above; virt-handler's init container log first)"
  exit 1
fi
echo "$KUBEVIRT_NAMESPACE"
