"""`helm uninstall` keeps the CRDs and every Instance (crds.keep), and guests keep
running without kubenova; installing the chart again takes them back over untouched. The
release is installed again at the end, so a KEEP_CLUSTER=1 cluster is left as it was."""

from __future__ import annotations

import pathlib

from tests import helm, kube
from tests.kind import cluster

pytestmark = cluster.MARKS
VALUES = kube.REPO / "hack" / "kind" / "values.yaml"
TAG_FILE = kube.REPO / ".kubenova" / "kind" / "image-tag"  # written by hack/kind-e2e.sh


def _install(chart: helm.Helm, tag: str) -> kube.Result:
    return chart.run(
        "install", helm.RELEASE, str(helm.CHART), "-n", helm.NAMESPACE, "-f", str(VALUES),
        "--set", f"controller.image.tag={tag}", "--set", f"agent.image.tag={tag}",
        "--wait", "--timeout", "5m", timeout=400,
    )  # fmt: skip


def test_uninstall_keeps_crds_and_instances(kubectl: kube.Kubectl) -> None:
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "outlives-the-chart", "namespace": "default"},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    assert kubectl.apply(manifest).ok
    inst = cluster.wait_phase(kubectl, "outlives-the-chart", "ACTIVE")
    node, uuid = inst["status"]["node"], inst["status"]["uuid"]
    assert cluster.last_report(kubectl, node, uuid).boots == 1
    tag = pathlib.Path(TAG_FILE).read_text().strip()
    chart = helm.Helm(kubectl.kubeconfig)
    try:
        gone = chart.run("uninstall", helm.RELEASE, "-n", helm.NAMESPACE, "--wait", timeout=300)
        assert gone.ok, gone.stderr
        kube.poll(lambda: not cluster.pods(kubectl, "app.kubernetes.io/name=kubenova"), timeout=180)
        crds = {c["metadata"]["name"] for c in kubectl.get_json("crds")["items"]}
        assert {
            f"{k}.compute.kubenova.io"
            for k in ("instances", "flavors", "migrations", "hypervisors")
        } <= crds
        kept = cluster.instance(kubectl, "outlives-the-chart")
        assert kept["status"]["phase"] == "ACTIVE"
        assert kubectl.get_json("flavor", "m1.tiny")["spec"]["vcpus"] == 1
    finally:
        installed = _install(chart, tag)
    assert installed.ok, installed.stderr
    # helm's --wait counts a DaemonSet ready with maxUnavailable pods still starting.
    rollout = kubectl.run(
        "rollout", "status", "-n", helm.NAMESPACE, "daemonset/kubenova-agent", "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    assert rollout.ok, rollout.stderr
    # The new agent on that node finds the running guest: still its first boot.
    back = cluster.wait_phase(kubectl, "outlives-the-chart", "ACTIVE")
    assert back["status"]["node"] == node
    assert cluster.reports(kubectl, node, uuid)[-1].boots == 1
    deleted = kubectl.run("delete", "instance", "outlives-the-chart", "--wait=true", timeout=300)
    assert deleted.ok, deleted.stderr
