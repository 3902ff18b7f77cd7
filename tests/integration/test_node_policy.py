"""The chart's node policy, enforced by a real API server with real tokens: the agent's
ServiceAccount token bound to a pod on node-a (TokenRequest, as a DaemonSet pod's own
token is) may write node-a's Hypervisor and Lease and the status of what is labelled for
node-a, and nothing of node-b's; a token bound to no node may write nothing."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hack import controlplane

from tests import builders, helm, kube

pytestmark = pytest.mark.xdist_group(__name__)

NS = helm.NAMESPACE
API = "/apis/compute.kubenova.io/v1alpha1"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
REFUSED = "may write only what belongs to its node"


class Client:
    """Raw requests with one token, as the agent's client sends them."""

    def __init__(self, kubectl: kube.Kubectl, token: str) -> None:
        cluster = yaml.safe_load(kubectl.kubeconfig.read_text())["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.tls = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self.token = token

    def send(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
        kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": kind},
        )
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.Kubectl]:
    directory = tmp_path_factory.mktemp("node-policy-controlplane")
    with controlplane.running(directory, controller_manager=False) as plane:
        client = kube.Kubectl(plane.kubeconfig)
        installed = helm.Helm(plane.kubeconfig).install({"webhook.enabled": "false"})
        assert installed.ok, installed.stderr
        kube.poll(lambda: client.run("get", "validatingadmissionpolicybinding").ok, timeout=30)
        yield client


def _token(kubectl: kube.Kubectl, node: str | None) -> str:
    bound = []
    if node:
        bound = ["--bound-object-kind=Pod", f"--bound-object-name={helm.pod_on(kubectl, node)}"]
    return kubectl("create", "token", "kubenova-agent", "-n", NS, *bound).strip()


@pytest.fixture(scope="module")
def on_node_a(kubectl: kube.Kubectl) -> Client:
    helm.pod_on(kubectl, "node-b")  # node-b exists too: refusals are not for a missing node
    client = Client(kubectl, _token(kubectl, "node-a"))
    # The binding being stored is not the policy being enforced: the API server loads it
    # asynchronously. Wait until a dry-run of a write it must refuse is refused.
    probe = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
    probe["metadata"] = {"name": "kubenova-node-probe", "namespace": NS}
    kube.poll(lambda: client.send("POST", f"{LEASES}?dryRun=All", probe)[0] == 403, timeout=30)
    return client


def _as_controller(kubectl: kube.Kubectl, path: str, body: dict[str, Any]) -> None:
    """What only the controller may do (kubenova's labels), with its token."""
    token = kubectl("create", "token", "kubenova-controller", "-n", NS).strip()
    status, text = Client(kubectl, token).send("PATCH", path, body)
    assert status == 200, text


def test_own_hypervisor_yes_another_node_no(kubectl: kube.Kubectl, on_node_a: Client) -> None:
    status, text = on_node_a.send("POST", f"{API}/hypervisors", builders.hypervisor("node-a"))
    assert status == 201, text
    status, text = on_node_a.send("POST", f"{API}/hypervisors", builders.hypervisor("node-b"))
    assert status == 403, text
    assert REFUSED in text
    assert "hypervisors node-b" in text

    assert kubectl.apply(builders.hypervisor("node-b")).ok  # registered by its own agent
    capacity = {"vcpus": 8, "memoryMiB": 16384, "diskGiB": 200}
    agent = {"driver": "fake", "capacity": capacity, "heartbeatTime": "2026-12-01T12:00:00Z"}
    report = {"status": {"agent": agent}}
    status, text = on_node_a.send("PATCH", f"{API}/hypervisors/node-a/status", report)
    assert status == 200, text
    status, text = on_node_a.send("PATCH", f"{API}/hypervisors/node-b/status", report)
    assert status == 403, text
    assert REFUSED in text


def test_own_node_lease_only(kubectl: kube.Kubectl, on_node_a: Client) -> None:
    def lease(name: str) -> dict[str, Any]:
        meta = {"name": name, "namespace": NS}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}

    status, text = on_node_a.send("POST", LEASES, lease("kubenova-node-node-a"))
    assert status == 201, text
    status, text = on_node_a.send("POST", LEASES, lease("kubenova-node-node-b"))
    assert status == 403, text
    # The controller's leader Lease is in the same namespace: no agent may take it.
    assert kubectl.apply(lease("kubenova-controller")).ok
    taken = kubectl.get_json("lease", "-n", NS, "kubenova-controller")
    taken["spec"] = {"holderIdentity": "agent-on-node-a"}
    status, text = on_node_a.send("PUT", f"{LEASES}/kubenova-controller", taken)
    assert status == 403, text
    assert REFUSED in text


def test_migration_status_only_between_its_nodes(kubectl: kube.Kubectl, on_node_a: Client) -> None:
    ours = builders.migration("from-a", sourceNode="node-a", destNode="node-b")
    theirs = builders.migration("b-only", sourceNode="node-b", destNode="node-b")
    for body in (ours, theirs):
        assert kubectl.apply(body).ok
    path = f"{API}/namespaces/default/migrations"
    phase = {"status": {"phase": "pre-migrating"}}
    status, text = on_node_a.send("PATCH", f"{path}/from-a/status", phase)
    assert status == 200, text
    status, text = on_node_a.send("PATCH", f"{path}/b-only/status", phase)
    assert status == 403, text
    assert REFUSED in text


def test_instance_status_only_when_labelled_for_its_node(
    kubectl: kube.Kubectl, on_node_a: Client
) -> None:
    path = f"{API}/namespaces/default/instances"
    for name, node in (("on-a", "node-a"), ("on-b", "node-b")):
        assert kubectl.apply(builders.instance(name)).ok
        label = {"metadata": {"labels": {"compute.kubenova.io/node": node}}}
        _as_controller(kubectl, f"{path}/{name}", label)
    released = {"status": {"released": {"node-a": "2026-12-01T12:00:00Z"}}}
    status, text = on_node_a.send("PATCH", f"{path}/on-a/status", released)
    assert status == 200, text
    status, text = on_node_a.send("PATCH", f"{path}/on-b/status", released)
    assert status == 403, text
    assert REFUSED in text


def test_a_token_bound_to_no_node_writes_nothing(kubectl: kube.Kubectl) -> None:
    unbound = Client(kubectl, _token(kubectl, None))
    status, text = unbound.send("POST", f"{API}/hypervisors", builders.hypervisor("node-c"))
    assert status == 403, text
    assert "bound to no node" in text
