"""tests/kind runs against a kind cluster with the chart installed, as users run kubenova.

Under hack/kind-e2e.sh (make kind-e2e) the cluster is the script's (KUBENOVA_KIND_KUBECONFIG).
Under `make test` the first kind test brings one up itself with `hack/kind-e2e.sh up` (a
Docker engine is installed and started when none answers) and deletes it at the end
(KEEP_CLUSTER=1 keeps it). Only when no Docker engine can be had are these tests skipped,
with hack/docker-engine.sh's reason. `make test` runs them after the rest, on their own
(a kind cluster's guests beside the e2e tests' would starve both on 2 cores); every module
takes `pytestmark = cluster.MARKS` (tests/kind/cluster.py): one worker, one cluster.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from tests import kube

SCRIPT = kube.REPO / "hack" / "kind-e2e.sh"
ENGINE = kube.REPO / "hack" / "docker-engine.sh"
KUBECONFIG = kube.REPO / ".kubenova" / "kind" / "kubeconfig"
NAMESPACE = "kubenova-system"
RELEASE = "kubenova"


def _run(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "KUBECONFIG"))}
    return subprocess.run(
        list(argv),
        cwd=kube.REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[pathlib.Path]:
    """The kind cluster's kubeconfig: the script's, or one brought up for this session."""
    given = os.environ.get("KUBENOVA_KIND_KUBECONFIG")
    if given:
        yield pathlib.Path(given)
        return
    engine = _run("bash", str(ENGINE), timeout=600)
    if engine.returncode != 0:
        pytest.skip(f"no Docker engine can be started here: {engine.stderr.strip()}")
    # Cold: Kubernetes, etcd, CoreDNS, ... built from Go modules and the node image (tens
    # of minutes, once per version); warm: a cluster and the chart in a few minutes.
    up = _run("bash", str(SCRIPT), "up", timeout=5400)
    assert up.returncode == 0, f"hack/kind-e2e.sh up failed:\n{up.stderr[-6000:]}"
    try:
        yield KUBECONFIG
    finally:
        if not os.environ.get("KEEP_CLUSTER"):
            _run("bash", str(SCRIPT), "down", timeout=600)


@pytest.fixture
def kubectl(kind_cluster: pathlib.Path) -> kube.Kubectl:
    """kubectl against the kind cluster (here, in place of the local control plane's)."""
    return kube.Kubectl(kind_cluster)
