# kubenova developer entry points. `make up` and `make test` work on a fresh machine:
# they install what is missing (venv, Debian packages, the Go-built control plane).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest workers: each starts its own control plane on free ports.
WORKERS ?= 2

.PHONY: up down test lint unit integration crds deps controlplane tools kind-e2e bench chaos clean help

help:
	@echo "make up       start a local control plane with kubenova's CRDs (prints export KUBECONFIG=...)"
	@echo "make down     stop everything make up started"
	@echo "make test     install what is missing, then lint, type-check and run every test"
	@echo "make crds     regenerate crds/ (and the Helm chart's copy) from the API models"
	@echo "make kind-e2e kind cluster (Docker started if needed), images, helm install, tests/kind"
	@echo "make bench    benchmarks; figures printed and written to bench-results/"
	@echo "make chaos    random faults and user actions, invariants checked (FAULTS=200 SEED=random)"

$(VENV)/.installed: pyproject.toml
	@bash hack/install-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev,libvirt]'
	touch $@

# Debian packages, libvirtd running, Python venv: every target that runs code needs these.
deps: $(VENV)/.installed
	@bash hack/install-deps.sh

controlplane: deps
	@bash hack/build-controlplane.sh >/dev/null

# helm, built once from its Go module into ~/.cache/kubenova (the chart tests use it).
tools: deps
	@bash hack/install-helm.sh >/dev/null

up: controlplane tools
	@$(PY) -m hack.devenv up

down:
	@if [ -x $(PY) ]; then $(PY) -m hack.devenv down; else echo "nothing to stop"; fi

crds: deps
	$(VENV)/bin/kubenova crds --output-dir crds
	$(VENV)/bin/kubenova crds --output-dir charts/kubenova/files/crds

lint: deps
	$(VENV)/bin/ruff check operator tests hack
	$(VENV)/bin/ruff format --check operator tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# tests/kind last, on its own: a kind cluster with TCG guests beside the e2e tests' own
# guests would starve both on 2 cores (tests/kind brings the cluster up and down itself).
test: lint controlplane tools
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup --ignore=tests/kind
	$(PY) -m pytest tests/kind

unit: deps
	$(PY) -m pytest tests/unit

# A kind cluster whose workers run libvirtd, kubenova's images, `helm install`, tests/kind;
# KEEP_CLUSTER=1 leaves it up (KUBECONFIG=.kubenova/kind/kubeconfig). `make test` runs
# tests/kind too, bringing the cluster up itself (tests/kind/conftest.py).
kind-e2e: deps tools
	bash hack/kind-e2e.sh

bench: controlplane
	$(PY) -m hack.bench_controlplane --runs 5
	$(PY) -m hack.bench_scheduler
	$(PY) -m hack.bench_fleet --scenario single
	$(PY) -m hack.bench_fleet --scenario concurrent --hypervisors 50 --instances 250
	$(PY) -m hack.bench_resize
	$(PY) -m hack.bench_downtime
	$(PY) -m hack.bench_transfer
	$(PY) -m hack.bench_heartbeats

# A seeded random run of faults and user actions on a kubenova of its own (hack/chaos.py);
# SEED unset: a random one, printed. Exit status 1 on any invariant violation.
FAULTS ?= 200
SEED ?=
chaos: controlplane
	$(PY) -m hack.chaos --faults $(FAULTS) $(if $(SEED),--seed $(SEED))

clean: down
	rm -rf $(VENV) .kubenova .pytest_cache .mypy_cache .ruff_cache
