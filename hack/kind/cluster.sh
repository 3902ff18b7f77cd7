#!/usr/bin/env bash
# A kind cluster for kubenova: one control plane and two workers that are compute hosts
# (libvirtd + QEMU in the node, hack/kind/images/node-libvirt.Dockerfile), its CNI, and the
# test guest image `cirros` in every worker's imagesPath. Reuses a running cluster of the
# same name and node image. Writes the kubeconfig to $KUBECONFIG.
#
#   hack/kind/cluster.sh create   # or: delete
# Needs NODE_IMAGE, CNI, KIND (and FLANNEL_IMAGE for flannel) from hack/kind/node-image.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CLUSTER="${KUBENOVA_KIND_CLUSTER:-kubenova}"
POD_SUBNET=10.244.0.0/16
IMAGES_PATH=/var/lib/kubenova/images
KUBEVIRT_PATH=/var/lib/kubenova/kubevirt
KUBEVIRT_DISKS="$ROOT/.kubenova/kind/kubevirt"
log() { echo "kind/cluster: $*" >&2; }
: "${KUBECONFIG:?}" "${KIND:?}"

running_image() { docker inspect -f '{{.Config.Image}}' "$CLUSTER-control-plane" 2>/dev/null || true; }

case "${1:-create}" in
  delete)
    "$KIND" delete cluster --name "$CLUSTER" >&2
    exit 0 ;;
  create) ;;
  *) echo "usage: $0 create|delete" >&2; exit 2 ;;
esac
: "${NODE_IMAGE:?}" "${CNI:?}"

if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  if [[ "$(running_image)" == "$NODE_IMAGE" ]]; then
    log "reusing the running cluster $CLUSTER"
  else
    log "cluster $CLUSTER runs $(running_image), not $NODE_IMAGE: recreating it"
    "$KIND" delete cluster --name "$CLUSTER" >&2
  fi
fi
# The KubeVirt driver's disk files (KUBEVIRT_PATH in each worker) are a directory of this
# checkout, so tests/kind can run the driver on this host against the node's files, as the
# agent does with its hostPath mount in the node (docs/kubevirt.md).
worker_mount() {
  mkdir -p "$KUBEVIRT_DISKS/worker$1"
  printf '  - role: worker\n    extraMounts:\n      - {hostPath: %s, containerPath: %s}\n' \
    "$KUBEVIRT_DISKS/worker$1" "$KUBEVIRT_PATH"
}
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  config=$(mktemp)
  disable_cni=false
  [[ "$CNI" == kindnet ]] || disable_cni=true
  cat >"$config" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: $POD_SUBNET
  disableDefaultCNI: $disable_cni
nodes:
  - role: control-plane
$(for i in 1 2; do worker_mount "$i"; done)
EOF
  start=$SECONDS
  "$KIND" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$config" \
    --kubeconfig "$KUBECONFIG" >&2
  rm -f "$config"
  log "cluster created in $((SECONDS - start))s"
fi
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

if [[ "$CNI" == flannel ]]; then
  : "${FLANNEL_IMAGE:?}"
  "$KIND" load docker-image --name "$CLUSTER" "$FLANNEL_IMAGE" >&2
  sed -e "s|@FLANNEL_IMAGE@|$FLANNEL_IMAGE|g" -e "s|@POD_SUBNET@|$POD_SUBNET|g" "$HERE/flannel.yaml" \
    | kubectl apply -f - >/dev/null
  kubectl -n kube-system rollout status daemonset/flannel --timeout=180s >&2
fi
kubectl wait --for=condition=Ready nodes --all --timeout=180s >/dev/null

# The demo image `cirros` of `make up` (the test guest with a marked disk) on every worker,
# where an operator would put images: the chart's agent.imagesPath.
image=$(cd "$ROOT" && .venv/bin/python -m hack.devenv demo-image --dir "$ROOT/.kubenova/kind")
for node in $("$KIND" get nodes --name "$CLUSTER"); do
  [[ "$node" == *control-plane ]] && continue
  docker exec "$node" mkdir -p "$IMAGES_PATH/cirros"
  tar -C "$image" -ch . | docker exec -i "$node" tar -C "$IMAGES_PATH/cirros" -x
done
log "ready: $(kubectl get nodes --no-headers | wc -l) nodes, KUBECONFIG=$KUBECONFIG"
