#!/usr/bin/env bash
# Debian packages the tests and `make up` need, installed only when missing, and libvirtd
# started. kubectl is expected on the machine (it is on these machines); Go builds the
# control plane (hack/build-controlplane.sh).
set -euo pipefail
missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v rsync >/dev/null || missing+=(rsync)  # make bench: the transfer baseline
# graphviz: `dot` renders docs/state-machines.svg (python -m hack.state_diagram).
command -v dot >/dev/null || missing+=(graphviz)
command -v kubectl >/dev/null || { echo "install-deps: kubectl is required on PATH" >&2; exit 1; }
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash "$(dirname "$0")/install-libvirt.sh"
