# shellcheck shell=bash
# KubeVirt for kubenova's kind clusters, built from the Go module proxy (sourced by the
# hack/kubevirt scripts). Why v1.7.0: it is the newest release whose whole module graph the
# proxy serves here; v1.8.0 needs libguestfs.org/libnbd at an unserved pseudo-version and
# v1.9.0 kubevirt.io/virt-template-*@v0.2.0 (403), see shared/notes/kubevirt-offline.md.
KUBEVIRT_VERSION="${KUBENOVA_KUBEVIRT_VERSION:-v1.7.0}"
# The tag's commit and time as the proxy reports them (`go mod download -json`: Origin.Hash,
# .info Time). source.sh refuses a module whose commit differs; the time is the binaries'
# buildDate, so a rebuild of the same inputs gives the same version strings.
KUBEVIRT_COMMIT="${KUBENOVA_KUBEVIRT_COMMIT:-50b9b4d0cf1caaf56147411a1e6765134e0e82b9}"
KUBEVIRT_BUILD_DATE="${KUBENOVA_KUBEVIRT_BUILD_DATE:-2025-11-22T23:34:02Z}"
# Images are named <prefix>/virt-<component>:<tag>. virt-operator derives every other image
# name from its own (pkg/virt-operator/util/config.go: "^(.*)/(.*)virt-operator([@:].*)?$"),
# so all five share the prefix and tag. Never `latest`: pods use IfNotPresent and the images
# only exist in the nodes' containerd (kind load).
KUBEVIRT_IMAGE_PREFIX="${KUBENOVA_KUBEVIRT_IMAGE_PREFIX:-kubenova.local/kubevirt}"
KUBEVIRT_IMAGE_TAG="${KUBENOVA_KUBEVIRT_IMAGE_TAG:-$KUBEVIRT_VERSION-kubenova}"
KUBEVIRT_NAMESPACE=kubevirt
KUBEVIRT_COMPONENTS="virt-operator virt-api virt-controller virt-handler virt-launcher"
# The runtime distribution: trixie's libvirt 11.3 / QEMU 10.0 are close to what upstream
# v1.7 ships (libvirt 10.10, QEMU 9.1); bookworm's 9.0 / 7.2 are older than anything it tests.
DEBIAN_SUITE="${KUBENOVA_KUBEVIRT_DEBIAN_SUITE:-trixie}"
DEBIAN_MIRROR="${KUBENOVA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_IMAGE="kubenova.local/debian:$DEBIAN_SUITE"
# Build niceness and `go build -p`: 2 shared cores by default; raise both on a bigger box.
KUBEVIRT_BUILD_NICE="${KUBENOVA_BUILD_NICE:-19}"
KUBEVIRT_BUILD_P="${KUBENOVA_BUILD_P:-1}"
KUBENOVA_CACHE="${KUBENOVA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenova}"
# Cache entries are $KUBENOVA_CACHE/kubevirt-<what>-$KUBEVIRT_VERSION-<hash of the inputs>.
kv_key() { cat "$@" | sha256sum | cut -c1-12; }
