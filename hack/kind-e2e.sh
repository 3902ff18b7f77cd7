#!/usr/bin/env bash
# kubenova as users run it: a kind cluster (1 control plane + 2 workers that run libvirtd
# and QEMU), kubenova's images built and loaded, the chart installed with `helm install`
# (values only: hack/kind/values.yaml), the sample flavors applied, then tests/kind.
#
#   hack/kind-e2e.sh                   # all of it; the cluster is deleted at the end
#   KEEP_CLUSTER=1 hack/kind-e2e.sh    # leave the cluster up (kubeconfig below)
#   hack/kind-e2e.sh up                # everything but the tests; leaves the cluster up
#   hack/kind-e2e.sh down              # delete the cluster
# The kubeconfig is .kubenova/kind/kubeconfig; stage durations go to .kubenova/kind/timings.
# A Docker engine is started (and installed, as root) when none answers:
# hack/docker-engine.sh says how, and why a runc wrapper. KUBENOVA_KIND_IMAGES=public|local
# |auto chooses kind's public images or images built here (hack/kind/node-image.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.kubenova/kind"
NAMESPACE=kubenova-system
RELEASE=kubenova
export KUBECONFIG="$STATE/kubeconfig"
export KUBENOVA_KIND_CLUSTER="${KUBENOVA_KIND_CLUSTER:-kubenova}"
mkdir -p "$STATE"
log() { echo "kind-e2e: $*" >&2; }
TIMINGS="$STATE/timings"
stage() { # name command...: run one stage and record its duration
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "$name $((SECONDS - start))" >>"$TIMINGS"
  log "$name: $((SECONDS - start))s"
}
what="${1:-all}"
: >"$TIMINGS"

stage docker-engine bash hack/docker-engine.sh >&2 || {
  log "no Docker engine can be started here (hack/docker-engine.sh above says why)"
  exit 1
}
if [[ "$what" == down ]]; then
  # Only kind itself: deleting a cluster needs no image (node-image.sh would check or build
  # them all).
  source hack/kind/versions.sh
  KIND="$(bash hack/kind/build-binaries.sh kind)/kind-$KIND_VERSION" bash hack/kind/cluster.sh delete
  exit 0
fi

node_images() { images=$(bash hack/kind/node-image.sh); }
stage node-image node_images
eval "$images"
export NODE_IMAGE CNI KIND FLANNEL_IMAGE="${FLANNEL_IMAGE:-}"
HELM="$(bash hack/install-helm.sh)"
[[ -x .venv/bin/python ]] || make deps >&2

# kubenova's images, tagged by their inputs: a changed operator is a new tag, so
# `helm upgrade` rolls the pods; an unchanged one is neither rebuilt nor reloaded.
TAG="kind-$(cat images/*.Dockerfile .dockerignore pyproject.toml <(git ls-files -s operator) \
  <(git diff HEAD -- operator) <(echo "$PYTHON_BASE") | sha256sum | cut -c1-12)"
kubenova_images() {
  local image started
  started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  # This host's extra CAs (a TLS-intercepting proxy in front of PyPI), for the build stage
  # only: images/build-ca/README.md.
  find images/build-ca -name '*.crt' -delete
  cp /usr/local/share/ca-certificates/*.crt images/build-ca/ 2>/dev/null || true
  for image in controller agent; do
    if ! docker image inspect "kubenova/$image:$TAG" >/dev/null 2>&1; then
      log "building kubenova/$image:$TAG on $PYTHON_BASE"
      DOCKER_BUILDKIT=0 docker build -q --force-rm -f "images/$image.Dockerfile" \
        --build-arg "BASE=$PYTHON_BASE" -t "kubenova/$image:$TAG" . >/dev/null
    fi
    # Earlier builds of this checkout's images (their layers are shared; the tags are not).
    docker images --format '{{.Repository}}:{{.Tag}}' "kubenova/$image" | grep ':kind-' \
      | grep -vx "kubenova/$image:$TAG" | xargs -r docker rmi >/dev/null || true
    echo "image kubenova/$image:$TAG $(docker image inspect -f '{{.Size}}' "kubenova/$image:$TAG") bytes" \
      >>"$TIMINGS"
  done
  # The legacy builder keeps each build stage as a dangling image (~0.7 GB for the agent's);
  # those of earlier runs go, this run's stay as the next build's layer cache.
  docker image prune -f --filter label=io.kubenova.stage=build --filter "until=$started" \
    >/dev/null || true
}
stage images kubenova_images
stage cluster bash hack/kind/cluster.sh create
if [[ "$what" == all && -z "${KEEP_CLUSTER:-}" ]]; then
  trap 'bash hack/kind/cluster.sh delete' EXIT
fi
load() {
  local image
  for image in controller agent; do
    "$KIND" load docker-image --name "$KUBENOVA_KIND_CLUSTER" "kubenova/$image:$TAG" >&2
  done
}
stage load load
install() {
  "$HELM" upgrade --install "$RELEASE" charts/kubenova -n "$NAMESPACE" --create-namespace \
    -f hack/kind/values.yaml --set "controller.image.tag=$TAG" --set "agent.image.tag=$TAG" \
    --wait --timeout 5m >&2
  # helm's --wait counts a DaemonSet ready with maxUnavailable pods still starting.
  kubectl -n "$NAMESPACE" rollout status "daemonset/$RELEASE-agent" --timeout=5m >&2
  kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE-controller" --timeout=5m >&2
  kubectl apply -f crds/samples/flavors.yaml >/dev/null
}
stage install install
# KubeVirt v1.7.0, built here from the Go module proxy and cached by version under
# ~/.cache/kubenova (hack/kubevirt/NOTES.md), installed by its operator; and the test guest
# as the container image KubeVirt boots its kernel from. KUBENOVA_KUBEVIRT=0: neither.
kubevirt() {
  local kernel node
  bash hack/kubevirt/install.sh >/dev/null
  kernel="$(bash hack/kubevirt/guest-image.sh)"
  "$KIND" load docker-image --name "$KUBENOVA_KIND_CLUSTER" "$kernel" >&2
  # The image `cirros` names it for the kubevirt driver (drivers/kubevirt.py KERNEL_IMAGE),
  # beside its disk in every worker's imagesPath (hack/kind/cluster.sh put it there).
  for node in $("$KIND" get nodes --name "$KUBENOVA_KIND_CLUSTER"); do
    [[ "$node" == *control-plane ]] && continue
    echo "$kernel" | docker exec -i "$node" tee /var/lib/kubenova/images/cirros/kubevirt-kernel-image >/dev/null
  done
}
[[ "${KUBENOVA_KUBEVIRT:-1}" == 0 ]] || stage kubevirt kubevirt
echo "$TAG" >"$STATE/image-tag"
log "cluster ready: export KUBECONFIG=$KUBECONFIG"
[[ "$what" == up ]] && exit 0

run_tests() {
  KUBENOVA_KIND_KUBECONFIG="$KUBECONFIG" .venv/bin/python -m pytest tests/kind -v \
    -p no:cacheprovider
}
stage tests run_tests
