#!/usr/bin/env bash
# Time a truly cold `make test`, stage by stage: a fresh clone of this checkout's HEAD, run
# with HOME in an empty directory, so the Go build and module caches, ~/.cache/kubenova (the
# control plane, helm, kind binaries, guest image) and pip's cache all start empty.
#
#   hack/cold-run.sh                      # figures in /tmp/kubenova-cold/timings
#   KUBENOVA_COLD_DOCKER=1 hack/cold-run.sh
#       also stops dockerd, removes EVERY Docker image on this machine and uninstalls
#       docker.io, containerd and runc first, so the Docker install and every image count.
#
# What it cannot make cold: the Debian packages hack/install-deps.sh installs (libvirt,
# QEMU), Go and Python themselves. Stage logs: /tmp/kubenova-cold/<stage>.log.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK=/tmp/kubenova-cold
OUT="$WORK/timings"
rm -rf "$WORK"
mkdir -p "$WORK/home"
if [[ -n "${KUBENOVA_COLD_DOCKER:-}" ]]; then
  docker rmi -f $(docker images -aq) >/dev/null 2>&1
  pkill dockerd; sleep 3; pkill containerd
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -q docker.io containerd runc >/dev/null
fi
# pyenv, Go's settings and the machine's CAs live outside HOME or are set here again.
ORIGINAL_HOME="$HOME"
export HOME="$WORK/home" PYENV_ROOT="${PYENV_ROOT:-/root/.pyenv}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
stage() {
  local name=$1 start=$SECONDS
  shift
  "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$OUT"
  return $rc
}
git clone -q "$ROOT" "$WORK/clone"
cd "$WORK/clone"
stage deps make deps &&
  stage controlplane make controlplane &&
  stage tools make tools &&
  stage lint make lint &&
  stage pytest-host .venv/bin/python -m pytest -n 2 --dist loadgroup --ignore=tests/kind &&
  stage pytest-kind .venv/bin/python -m pytest tests/kind
rc=$?
# The kind stages' own split: Docker, node image, images, cluster, load, install; and each
# Go binary and image the node image needed.
cat .kubenova/kind/timings "$HOME/.cache/kubenova/kind/timings" >>"$OUT" 2>/dev/null
echo "total $SECONDS s" | tee -a "$OUT"
if [[ -n "${KUBENOVA_COLD_DOCKER:-}" ]]; then
  # dockerd was started with its runc wrapper under this run's HOME: start it again from
  # the usual one, so that removing $WORK does not take the wrapper from under it.
  pkill dockerd; sleep 3; pkill containerd
  HOME="$ORIGINAL_HOME" bash "$ROOT/hack/docker-engine.sh" >/dev/null 2>&1
fi
exit $rc
