"""Rollouts of the chart's pods while guests are mid-resize, as an operator does them:
`helm upgrade` restarts every agent while an instance waits in VERIFY_RESIZE, and the
leading controller pod is deleted in the middle of a resize. Each resize completes and the
guest keeps its data: it never rebooted for it (its own boot counter says so)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests import helm, kube
from tests.e2e import guest
from tests.kind import cluster

pytestmark = cluster.MARKS
SMALL_DISK = 20 * guest.SECTORS_PER_GIB  # m1.small


@pytest.fixture
def booted(kubectl: kube.Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """An m1.tiny instance whose guest has reported its first boot. Its resizes are cold
    (resizePolicy): a rollout during the power-off, move and boot is what is tested."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"flavor": "m1.tiny", "image": "cirros", "resizePolicy": "Cold"},
    }
    assert kubectl.apply(manifest).ok
    inst = cluster.wait_phase(kubectl, name, "ACTIVE")
    assert cluster.last_report(kubectl, inst["status"]["node"], inst["status"]["uuid"]).boots == 1
    yield name
    kubectl.run("delete", "instance", name, "--wait=true", timeout=300)


def _agents_restarted(kubectl: kube.Kubectl, before: set[str]) -> list[str] | None:
    """The agent pods, once none of `before` is left and all are Ready."""
    now = cluster.pods(kubectl, cluster.AGENT)
    names = {p["metadata"]["name"] for p in now}
    ready = all(cluster.pod_ready(p) for p in now)
    return sorted(names) if names and not names & before and ready and len(now) == 2 else None


def test_helm_upgrade_restarts_agents_in_verify_resize(kubectl: kube.Kubectl, booted: str) -> None:
    assert cluster.resize(kubectl, booted, "m1.small").ok
    resized = cluster.wait_phase(kubectl, booted, "VERIFY_RESIZE")
    node, uuid = resized["status"]["node"], resized["status"]["uuid"]
    assert cluster.last_report(kubectl, node, uuid, boots=2).disk_sectors == SMALL_DISK

    before = {p["metadata"]["name"] for p in cluster.pods(kubectl, cluster.AGENT)}
    # A values change that rolls the DaemonSet, and nothing else: --reuse-values.
    upgrade = helm.Helm(kubectl.kubeconfig).run(
        "upgrade", helm.RELEASE, str(helm.CHART), "-n", helm.NAMESPACE, "--reuse-values",
        "--set", f"agent.podAnnotations.kubenova-e2e/rollout=r{int(time.time())}",
        "--wait", "--timeout", "5m", timeout=400,
    )  # fmt: skip
    assert upgrade.ok, upgrade.stderr
    kube.poll(lambda: _agents_restarted(kubectl, before), timeout=300, interval=2)
    assert cluster.instance(kubectl, booted)["status"]["phase"] == "VERIFY_RESIZE"

    cluster.annotate(kubectl, booted, "resize", "confirm")
    done = cluster.wait_phase(kubectl, booted, "ACTIVE")
    assert done["status"]["flavor"]["name"] == "m1.small"
    assert done["status"]["node"] == node
    # The new agents took over the running guest: no reboot, its data as it was.
    report = cluster.reports(kubectl, node, uuid)[-1]
    assert (report.boots, report.disk_sectors) == (2, SMALL_DISK), report


def test_leader_pod_deleted_mid_resize(kubectl: kube.Kubectl, booted: str) -> None:
    leading = cluster.leader(kubectl)
    assert leading in {p["metadata"]["name"] for p in cluster.pods(kubectl, cluster.CONTROLLER)}
    patch = json.dumps({"spec": {"flavor": "m1.small"}})
    kubectl("patch", "instance", booted, "--type=merge", "-p", patch)
    kube.poll(
        lambda: cluster.instance(kubectl, booted)["status"].get("taskState"),
        timeout=60,
        interval=0.5,
    )
    kubectl("delete", "pod", "-n", cluster.NAMESPACE, leading, "--wait=false")

    resized = cluster.wait_phase(kubectl, booted, "VERIFY_RESIZE")
    assert cluster.leader(kubectl) not in {"", leading}
    node, uuid = resized["status"]["node"], resized["status"]["uuid"]
    assert cluster.last_report(kubectl, node, uuid, boots=2).disk_sectors == SMALL_DISK
    cluster.annotate(kubectl, booted, "resize", "confirm")
    done = cluster.wait_phase(kubectl, booted, "ACTIVE")
    assert done["status"]["flavor"]["name"] == "m1.small"
    migrations = kubectl.get_json("migrations", "-l", f"compute.kubenova.io/instance={booted}")
    assert [m["status"]["phase"] for m in migrations["items"]] == ["confirmed"]
    report = cluster.reports(kubectl, node, uuid)[-1]
    assert (report.boots, report.disk_sectors, report.marker) == (
        2,
        SMALL_DISK,
        "kubenova-demo-disk",
    )
    # The Deployment puts a new replica in the deleted leader's place, and it stands by
    # (Ready once its informers have synced), so the pair survives the next failure.
    rollout = kubectl.run(
        "rollout", "status", "deployment/kubenova-controller", "-n", cluster.NAMESPACE,
        "--timeout=180s", timeout=200,
    )  # fmt: skip
    assert rollout.ok, rollout.stderr
    controllers = cluster.pods(kubectl, cluster.CONTROLLER)
    assert leading not in {p["metadata"]["name"] for p in controllers}
    assert [cluster.pod_ready(p) for p in controllers] == [True, True], controllers
