"""Resize, confirm and revert in a kind cluster where the chart runs kubenova (fake
driver): the user's kubectl, the chart's images, pods, RBAC and webhook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests import kube

NAMESPACE = "default"
TIMEOUT = 180  # pods on a fresh kind cluster; the fake driver itself takes no time


@pytest.fixture
def demo(cluster: kube.Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"kind-{request.node.name.removeprefix('test_').replace('_', '-')}"[:50]
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    result = cluster.apply(manifest)
    assert result.ok, result.stderr
    _wait(cluster, name, "ACTIVE")
    yield name
    cluster.run("delete", "instance", name, "--wait=false")


def _instance(cluster: kube.Kubectl, name: str) -> dict[str, Any]:
    return cluster.get_json("instance", name, "-n", NAMESPACE)  # type: ignore[no-any-return]


def _wait(cluster: kube.Kubectl, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        inst = _instance(cluster, name)
        status = inst.get("status", {})
        return inst if status.get("phase") == phase and not status.get("taskState") else None

    return kube.poll(reached, timeout=TIMEOUT, interval=1)  # type: ignore[no-any-return]


def _resize(cluster: kube.Kubectl, name: str, flavor: str) -> kube.Result:
    patch = json.dumps({"spec": {"flavor": flavor}})
    return cluster.run("patch", "instance", name, "-n", NAMESPACE, "--type=merge", "-p", patch)


def _annotate(cluster: kube.Kubectl, name: str, action: str) -> None:
    cluster("annotate", "instance", name, "-n", NAMESPACE, f"compute.kubenova.io/resize={action}")


def test_resize_then_confirm(cluster: kube.Kubectl, demo: str) -> None:
    assert _resize(cluster, demo, "m1.small").ok
    _wait(cluster, demo, "VERIFY_RESIZE")
    _annotate(cluster, demo, "confirm")
    inst = _wait(cluster, demo, "ACTIVE")
    assert inst["status"]["flavor"]["name"] == "m1.small"


def test_resize_then_revert(cluster: kube.Kubectl, demo: str) -> None:
    assert _resize(cluster, demo, "m1.small").ok
    _wait(cluster, demo, "VERIFY_RESIZE")
    _annotate(cluster, demo, "revert")
    inst = _wait(cluster, demo, "ACTIVE")
    assert inst["spec"]["flavor"] == "m1.tiny"
    assert inst["status"]["flavor"]["name"] == "m1.tiny"


def test_webhook_refuses_an_unknown_flavor(cluster: kube.Kubectl, demo: str) -> None:
    """The chart's Service, certificate and webhook configuration reach the controller."""
    refused = _resize(cluster, demo, "m9.huge")
    assert not refused.ok
    assert "m9.huge does not exist" in refused.stderr
