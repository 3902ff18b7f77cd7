#!/usr/bin/env bash
# Helm, built once from its Go module into a cache outside the repository (no Docker, no
# release download: the Go module proxy is what these machines reach). Idempotent: prints
# the path of the helm binary, building it only when it is missing. $HELM, when set to an
# executable, is used as it is.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# The Kubernetes version helm assumes without a cluster (helm template, lint): its release
# build sets it from its client-go (v0.34 -> 1.34) and so do we; without it helm says 1.20.
K8S_MAJOR=1
K8S_MINOR=34
if [[ -n "${HELM:-}" && -x "${HELM}" ]]; then
  echo "${HELM}"
  exit 0
fi
cache="${KUBENOVA_CACHE:-$HOME/.cache/kubenova}/helm-${HELM_VERSION}"
bin="${cache}/bin/helm"
if [[ ! -x "${bin}" || "$("${bin}" version --short 2>/dev/null)" != "${HELM_VERSION}"* ]]; then
  echo "install-helm: building helm ${HELM_VERSION} into ${cache} (a few minutes, once)" >&2
  mkdir -p "${cache}/bin"
  # A GOPATH under the cache keeps the module downloads out of the user's Go setup.
  GOBIN="${cache}/bin" GOPATH="${cache}/gopath" GOFLAGS=-modcacherw CGO_ENABLED=0 \
    go install -trimpath -ldflags "-w -s \
      -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${K8S_MAJOR} \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${K8S_MINOR} \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${K8S_MAJOR} \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${K8S_MINOR}" \
      "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
fi
echo "${bin}"
