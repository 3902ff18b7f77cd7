"""tests/kind runs against a kind cluster that hack/kind-e2e.sh (make kind-e2e) created
with the chart installed; without Docker, or outside that script, it is skipped with the
reason. The same scenarios run on every `make test` against the local control plane
(tests/integration/test_actions.py, test_lifecycle.py)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from tests import kube


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = pathlib.Path(__file__).parent
    mine = [item for item in items if here in pathlib.Path(str(item.fspath)).parents]
    if not mine:
        return
    reason = ""
    if not _docker_engine():
        reason = "no Docker engine (docker info failed): kind cannot run here"
    elif not os.environ.get("KUBENOVA_KIND_KUBECONFIG"):
        reason = "needs the kind cluster of hack/kind-e2e.sh (make kind-e2e)"
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def cluster() -> kube.Kubectl:
    """kubectl against the kind cluster."""
    return kube.Kubectl(pathlib.Path(os.environ["KUBENOVA_KIND_KUBECONFIG"]))
