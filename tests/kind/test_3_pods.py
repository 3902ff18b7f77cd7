"""The chart's pods after everything before them (the walkthrough, the rollouts): what
`kubectl get pods -n kubenova-system` shows a user, the leader Lease, and the webhook
serving the certificate the chart generated."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests import kube
from tests.kind import cluster

pytestmark = cluster.MARKS


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))


def test_pods_ready_one_leader_no_restarts(kubectl: kube.Kubectl) -> None:
    workers = sorted(
        n["metadata"]["name"]
        for n in kubectl.get_json("nodes")["items"]
        if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]
    )
    assert len(workers) == 2

    controllers = cluster.pods(kubectl, cluster.CONTROLLER)
    agents = cluster.pods(kubectl, cluster.AGENT)
    assert len(controllers) == 2
    assert sorted(p["spec"]["nodeName"] for p in agents) == workers  # one per worker
    for pod in controllers + agents:
        name = pod["metadata"]["name"]
        assert _ready(pod), f"{name} is not Ready: {pod['status']}"
        assert _restarts(pod) == 0, f"{name} restarted {_restarts(pod)} times"
    assert cluster.leader(kubectl) in {p["metadata"]["name"] for p in controllers}

    # Each worker is a Hypervisor its agent reports up, with the node's real capacity.
    hypervisors = {h["metadata"]["name"]: h for h in kubectl.get_json("hypervisors")["items"]}
    assert sorted(hypervisors) == workers
    for name in workers:
        assert hypervisors[name]["status"]["agent"]["capacity"]["vcpus"] >= 1, hypervisors[name]


def test_webhook_answers_with_the_chart_certificate(kubectl: kube.Kubectl) -> None:
    """The API server reaches the webhook through the chart's Service and trusts it with
    the CA the chart generated (the same CA is in the webhook configuration and the Secret)."""
    secret = kubectl.get_json("secret", "-n", cluster.NAMESPACE, "kubenova-webhook-tls")
    config = kubectl.get_json("validatingwebhookconfigurations", "kubenova-webhook")
    bundles = {w["clientConfig"]["caBundle"] for w in config["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}
    assert base64.b64decode(secret["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")

    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "webhook-probe", "namespace": "default"},
        "spec": {"flavor": "m9.huge", "image": "cirros"},
    }
    refused = kubectl.run("apply", "-f", "-", stdin=json.dumps(manifest))
    assert not refused.ok
    assert "m9.huge does not exist" in refused.stderr, refused.stderr
