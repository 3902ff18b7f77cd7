# shellcheck shell=bash
# The versions of everything in kubenova's kind clusters, in one place (sourced by the
# hack/kind scripts). Each may be overridden from the environment. Kubernetes matches the
# local control plane of hack/build-controlplane.sh; etcd, CoreDNS and pause are the ones
# kubeadm v1.34 asks for (`kubeadm config images list`), so no kubeadm setting changes.
K8S_VERSION="${KUBENOVA_K8S_VERSION:-1.34.4}"
# The newest kind whose module graph the Go module proxy serves here (v0.30.0's default
# node image is Kubernetes v1.34.0; ours is built from K8S_VERSION).
KIND_VERSION="${KUBENOVA_KIND_VERSION:-v0.30.0}"
CRICTL_VERSION="${KUBENOVA_CRICTL_VERSION:-v1.34.0}"
ETCD_VERSION="${KUBENOVA_KIND_ETCD_VERSION:-3.6.5}"
ETCD_IMAGE_TAG="$ETCD_VERSION-0"
COREDNS_VERSION="${KUBENOVA_COREDNS_VERSION:-v1.12.1}"
PAUSE_VERSION="3.10.1"
LOCAL_PATH_VERSION="${KUBENOVA_LOCAL_PATH_VERSION:-v0.0.30}"
# The CNI (docs/decisions.md, "kind cluster"): flannel's daemon (v0.28.10 needs a tencentcloud
# vpc module the proxy refuses; v0.28.4 builds with a served tencentcloud common), and the
# flannel CNI plugin
# of containernetworking/plugins v0.9.1 (its later home, flannel-io/cni-plugin, is refused
# by the module proxy).
FLANNEL_VERSION="${KUBENOVA_FLANNEL_VERSION:-v0.28.4}"
TENCENT_COMMON_VERSION=v1.3.211
FLANNEL_CNI_VERSION="${KUBENOVA_FLANNEL_CNI_VERSION:-v0.9.1}"
K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl"
KUBENOVA_CACHE="${KUBENOVA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenova}"
KIND_CACHE="$KUBENOVA_CACHE/kind"
# Images kind and kubeadm expect by these names (kind v0.30.0 pkg/build/nodeimage).
SANDBOX_IMAGE="registry.k8s.io/pause:3.10"
LOCAL_PATH_IMAGE="docker.io/kindest/local-path-provisioner:v20250214-acbabc1a"
LOCAL_PATH_HELPER_IMAGE="docker.io/kindest/local-path-helper:v20241212-8ac705d0"
KINDNETD_IMAGE="docker.io/kindest/kindnetd:v20250512-df8de77b"
FLANNEL_IMAGE="kubenova.local/flannel:$FLANNEL_VERSION"
# Where kind's public images can be pulled, they are used instead (KUBENOVA_KIND_IMAGES=
# public|local|auto; auto tries a pull of this one).
PUBLIC_NODE_IMAGE="kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"
