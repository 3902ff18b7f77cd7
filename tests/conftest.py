"""Session fixtures: one real control plane per pytest worker, with the CRDs installed."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from hack import controlplane

from tests import env as kubenova_env
from tests import kube


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    with controlplane.running(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl(control_plane: controlplane.ControlPlane) -> kube.Kubectl:
    client = kube.Kubectl(pathlib.Path(control_plane.kubeconfig))
    kube.install_crds(client)
    return client


@pytest.fixture
def env(tmp_path: pathlib.Path) -> Iterator[kubenova_env.Env]:
    """A fresh control plane with CRDs and flavors; start the controller and agents in the test."""
    with kubenova_env.running(tmp_path) as environment:
        yield environment
