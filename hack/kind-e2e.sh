#!/usr/bin/env bash
# The chart in a real cluster (needs a Docker engine): a kind cluster with two worker
# nodes, both images built and loaded, `helm install` with the fake driver, then the
# resize scenarios of tests/kind driven with kubectl. The same scenarios run against the
# local control plane in tests/integration on every `make test`; this adds the images,
# the chart's pods, probes, Service and webhook certificate.
#
#   hack/kind-e2e.sh             # create, test, delete the cluster
#   KEEP_CLUSTER=1 hack/kind-e2e.sh   # leave it running (kind delete cluster --name kubenova-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
CLUSTER="${KUBENOVA_KIND_CLUSTER:-kubenova-e2e}"
TAG="${KUBENOVA_IMAGE_TAG:-e2e}"
NAMESPACE=kubenova-system
STATE=.kubenova/kind
mkdir -p "${STATE}"

if ! docker info >/dev/null 2>&1; then
  echo "kind-e2e: no Docker engine (docker info failed); nothing to do here" >&2
  exit 1
fi

kind_bin() {
  if command -v kind >/dev/null; then command -v kind; return; fi
  local dir="${HOME}/.cache/kubenova/kind-${KIND_VERSION}/bin"
  if [[ ! -x "${dir}/kind" ]]; then
    echo "kind-e2e: building kind ${KIND_VERSION} into ${dir}" >&2
    GOBIN="${dir}" go install "sigs.k8s.io/kind@${KIND_VERSION}" >&2
  fi
  echo "${dir}/kind"
}
KIND="$(kind_bin)"
HELM="$(bash hack/install-helm.sh)"
# The tests only need pytest and kubectl (no libvirt on this host).
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv && .venv/bin/pip install --quiet -e '.[dev]'
fi

docker build -f images/controller.Dockerfile -t "kubenova/controller:${TAG}" .
docker build -f images/agent.Dockerfile -t "kubenova/agent:${TAG}" .

if ! "${KIND}" get clusters | grep -qx "${CLUSTER}"; then
  "${KIND}" create cluster --name "${CLUSTER}" --config tests/kind/cluster.yaml --wait 180s
fi
if [[ -z "${KEEP_CLUSTER:-}" ]]; then
  trap '"${KIND}" delete cluster --name "${CLUSTER}"' EXIT
fi
export KUBECONFIG="${PWD}/${STATE}/kubeconfig"
"${KIND}" get kubeconfig --name "${CLUSTER}" >"${KUBECONFIG}"
for image in controller agent; do
  "${KIND}" load docker-image --name "${CLUSTER}" "kubenova/${image}:${TAG}"
done

"${HELM}" upgrade --install kubenova charts/kubenova -n "${NAMESPACE}" --create-namespace \
  --set agent.driver=fake \
  --set controller.image.tag="${TAG}" --set agent.image.tag="${TAG}" \
  --set controller.image.pullPolicy=Never --set agent.image.pullPolicy=Never \
  --set controller.serviceDownTimeSeconds=20 --set agent.heartbeatIntervalSeconds=2 \
  --set controller.retryBaseSeconds=1 --set controller.retryCapSeconds=5 \
  --wait --timeout 5m
kubectl apply -f crds/samples/flavors.yaml

KUBENOVA_KIND_KUBECONFIG="${KUBECONFIG}" .venv/bin/python -m pytest tests/kind -v -p no:xdist
