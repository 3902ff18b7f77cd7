"""The chart's RBAC, asserted as the API server enforces it: acting as each ServiceAccount
(impersonation), a table of allowed and denied requests; then the controller and agents
running a resize and a cold migration with nothing but the chart's permissions."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hack import controlplane

from tests import env as kubenova_env
from tests import helm, kube

# One control plane per module: keep its tests on one worker.
pytestmark = pytest.mark.xdist_group(__name__)

NS = helm.NAMESPACE
MERGE = "application/merge-patch+json"
CONTROLLER = f"system:serviceaccount:{NS}:kubenova-controller"
AGENT = f"system:serviceaccount:{NS}:kubenova-agent"
# The webhook needs a reachable Service, which this API server without nodes cannot have;
# it plays no part in RBAC.
VALUES = {"webhook.enabled": "false"}

# (who, verb, resource, namespace, allowed?). resource: "instances", "instances/status"
# (the status subresource) or "leases/NAME" (one object); namespace: "" for cluster-scoped
# kinds or cluster-wide, "*" for all namespaces.
TABLE = [
    # The agent writes status only, and only kubenova's.
    (AGENT, "patch", "instances/status", "default", True),
    (AGENT, "patch", "migrations/status", "tenant-a", True),
    (AGENT, "list", "instances", "*", True),
    (AGENT, "get", "instances", "tenant-a", True),  # the orphan sweep's label-free lookup
    (AGENT, "watch", "migrations", "*", True),
    (AGENT, "patch", "instances", "default", False),  # spec, labels, annotations
    (AGENT, "update", "instances", "default", False),
    (AGENT, "delete", "instances", "default", False),
    (AGENT, "create", "migrations", "default", False),
    (AGENT, "patch", "migrations", "default", False),
    (AGENT, "create", "hypervisors", "", True),
    (AGENT, "patch", "hypervisors/status", "", True),
    (AGENT, "patch", "hypervisors", "", False),  # allocation ratios are the admin's
    (AGENT, "delete", "hypervisors", "", False),
    (AGENT, "create", "flavors", "", False),
    (AGENT, "patch", "flavors", "", False),
    # Transfer tokens are derived from a key mounted into the pod: no Secret permissions.
    (AGENT, "get", "secrets", "default", False),
    (AGENT, "get", "secrets", NS, False),
    (AGENT, "list", "secrets", "default", False),
    (AGENT, "get", "secrets", "kube-system", False),
    (AGENT, "list", "secrets", "*", False),
    (AGENT, "create", "secrets", "default", False),
    # Its heartbeat is a Lease in the release namespace, nowhere else.
    (AGENT, "update", "leases/kubenova-node-node-a", NS, True),
    (AGENT, "create", "leases", NS, True),
    (AGENT, "update", "leases", "kube-system", False),
    (AGENT, "create", "leases", "default", False),
    (AGENT, "delete", "leases", NS, False),
    # Its transfer certificate: it asks and reads the answer; it cannot approve or sign.
    (AGENT, "create", "certificatesigningrequests", "", True),
    (AGENT, "get", "certificatesigningrequests", "", True),
    (AGENT, "update", "certificatesigningrequests/approval", "", False),
    (AGENT, "update", "certificatesigningrequests/status", "", False),
    (AGENT, "delete", "certificatesigningrequests", "", False),
    # The controller decides: Instances, Migrations, usage, its Lease. No Secrets.
    (CONTROLLER, "patch", "instances", "default", True),
    (CONTROLLER, "patch", "instances/status", "default", True),
    (CONTROLLER, "delete", "instances", "default", False),
    (CONTROLLER, "create", "migrations", "tenant-a", True),
    (CONTROLLER, "patch", "migrations/status", "default", True),
    (CONTROLLER, "delete", "migrations", "default", False),
    (CONTROLLER, "patch", "hypervisors/status", "", True),
    (CONTROLLER, "create", "hypervisors", "", False),
    (CONTROLLER, "list", "flavors", "", True),
    (CONTROLLER, "get", "flavors", "", True),  # the webhook's read of a Flavor not yet watched
    (CONTROLLER, "patch", "flavors", "", False),
    (CONTROLLER, "create", "secrets", "default", False),
    (CONTROLLER, "create", "secrets", "tenant-a", False),
    (CONTROLLER, "get", "secrets", "default", False),
    (CONTROLLER, "create", "secrets", "kube-system", False),
    (CONTROLLER, "create", "events", "tenant-a", True),
    (CONTROLLER, "create", "leases", NS, True),
    (CONTROLLER, "update", "leases/kubenova-controller", NS, True),
    (CONTROLLER, "update", "leases/kube-controller-manager", "kube-system", False),
    (CONTROLLER, "update", "leases/someone-else", NS, False),
    (CONTROLLER, "watch", "leases", NS, True),  # the nodes' heartbeats
    (CONTROLLER, "update", "leases/kubenova-node-node-a", NS, False),
    (CONTROLLER, "create", "validatingwebhookconfigurations", "", False),
    (CONTROLLER, "list", "customresourcedefinitions", "", True),
    # The transfer signer: reads requests, approves or denies, signs; asks for nothing.
    (CONTROLLER, "watch", "certificatesigningrequests", "", True),
    (CONTROLLER, "update", "certificatesigningrequests/approval", "", True),
    (CONTROLLER, "update", "certificatesigningrequests/status", "", True),
    (CONTROLLER, "create", "certificatesigningrequests", "", False),
    (CONTROLLER, "delete", "certificatesigningrequests", "", False),
    # Neither touches the API itself or grants itself more.
    (CONTROLLER, "delete", "customresourcedefinitions", "", False),
    (AGENT, "delete", "customresourcedefinitions", "", False),
    (CONTROLLER, "escalate", "clusterroles", "", False),
    (AGENT, "create", "pods", "default", False),
]


def _id(row: tuple[str, str, str, str, bool]) -> str:
    who, verb, resource, namespace, allowed = row
    where = {"": "", "*": "@all"}.get(namespace, f"@{namespace}")
    return f"{who.rsplit('-', 1)[1]}-{'may' if allowed else 'not'}-{verb}-{resource}{where}"


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.Kubectl]:
    directory = tmp_path_factory.mktemp("rbac-controlplane")
    with controlplane.running(directory, controller_manager=False) as plane:
        client = kube.Kubectl(plane.kubeconfig)
        client("create", "namespace", "tenant-a")
        # RBAC alone: the node policy (tests/integration/test_node_policy.py) would refuse
        # the unbound tokens of these requests before RBAC had its say.
        result = helm.Helm(plane.kubeconfig).install({**VALUES, "nodePolicy.enabled": "false"})
        assert result.ok, result.stderr
        yield client


@pytest.mark.parametrize("row", TABLE, ids=[_id(r) for r in TABLE])
def test_can_i(kubectl: kube.Kubectl, row: tuple[str, str, str, str, bool]) -> None:
    who, verb, resource, namespace, allowed = row
    where = {"": [], "*": ["--all-namespaces"]}.get(namespace, ["-n", namespace])
    kind, _, sub = resource.partition("/")
    what = [kind, f"--subresource={sub}"] if sub in ("status", "approval") else [resource]
    result = kubectl.run("auth", "can-i", verb, *what, *where, f"--as={who}")
    answer = result.stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"{who} {verb} {resource}: {result}"


def _patch_as(
    kubectl: kube.Kubectl, service_account: str, path: str, body: dict[str, object]
) -> tuple[int, str]:
    """One merge patch with the ServiceAccount's token, as the agent's client sends it
    (kubectl patch would GET first, which the agent never does and may not)."""
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    token = kubectl("create", "token", service_account, "-n", NS).strip()
    request = urllib.request.Request(
        cluster["server"] + path,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": MERGE},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_agent_status_patch_cannot_change_spec(kubectl: kube.Kubectl) -> None:
    """Real requests as the agent: the main resource refuses a spec change; the status
    subresource takes the agent's report and ignores a spec smuggled into it."""
    instance = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    assert kubectl.apply(instance).ok
    path = "/apis/compute.kubenova.io/v1alpha1/namespaces/default/instances/demo"
    spec = {"spec": {"flavor": "m1.xlarge"}}
    status, text = _patch_as(kubectl, "kubenova-agent", path, spec)
    assert status == 403, text
    host = {
        "powerState": "Running",
        "vcpus": 1,
        "memoryMiB": 512,
        "diskGiB": 1,
        "observedAt": "2026-11-27T18:00:00Z",
    }
    report = {"status": {"host": host}, **spec}
    status, text = _patch_as(kubectl, "kubenova-agent", path + "/status", report)
    assert status == 200, text
    after = kubectl.get_json("instance", "demo")
    assert after["spec"]["flavor"] == "m1.tiny"
    assert after["status"]["host"]["powerState"] == "Running"


def test_resize_and_migrate_run_with_only_the_chart_permissions(tmp_path: pathlib.Path) -> None:
    """The controller and two agents authenticate as the chart's ServiceAccounts: a resize,
    a confirm and a cold migration go through, and no request of theirs is refused."""
    with kubenova_env.running(tmp_path) as env:
        installed = helm.Helm(env.plane.kubeconfig).install({**VALUES, "crds.install": "false"})
        assert installed.ok, installed.stderr
        as_controller = helm.service_account_kubeconfig(
            env.kubectl, "kubenova-controller", tmp_path / "controller.kubeconfig"
        )
        env.start_controller(
            webhook=False, environ={"KUBECONFIG": str(as_controller), "POD_NAMESPACE": NS}
        )
        for node in ("node-a", "node-b"):
            # Each agent with a token bound to its node, as a DaemonSet pod has (node policy).
            as_agent = helm.service_account_kubeconfig(
                env.kubectl, "kubenova-agent", tmp_path / f"agent-{node}.kubeconfig", node=node
            )
            env.start_agent(node, environ={"KUBECONFIG": str(as_agent), "POD_NAMESPACE": NS})
        env.create("demo")
        env.wait_phase("demo", "ACTIVE")
        assert env.resize("demo", "m1.small").ok
        env.wait_phase("demo", "VERIFY_RESIZE")
        env.annotate("demo", "resize", "confirm")
        before = env.wait_phase("demo", "ACTIVE")["status"]["node"]
        env.annotate("demo", "migrate", "")
        after = env.wait_phase("demo", "VERIFY_RESIZE")["status"]["node"]
        assert after != before
        env.annotate("demo", "resize", "confirm")
        env.wait_phase("demo", "ACTIVE")
        lease = env.kubectl.get_json("lease", "kubenova-controller", "-n", NS)
        assert lease["spec"]["holderIdentity"]
        # No request lacked a permission (RBAC's "User ... cannot <verb> resource"). The node
        # policy may refuse an agent's late status write for an instance that has just left
        # its node (its cache a step behind the controller's label change): that refusal is
        # the policy at work (tests/integration/test_node_policy.py), not a missing rule.
        denied = re.findall(r'forbidden: user \\?"[^"\\]+\\?" cannot', env.logs().lower())
        assert not denied, env.logs()


@pytest.mark.parametrize("values", [{}, {"agent.driver": "fake"}, {"agent.driver": "kubevirt"}])
def test_no_wildcards(values: dict[str, str]) -> None:
    roles = [d for d in helm.Helm().template(values) if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)


def _agent_rules(values: dict[str, str]) -> list[dict[str, Any]]:
    roles = [d for d in helm.Helm().template(values) if d["kind"] == "ClusterRole"]
    agent = next(r for r in roles if r["metadata"]["name"].endswith("-agent"))
    return agent["rules"]  # type: ignore[no-any-return]


def test_only_a_kubevirt_agent_may_touch_virtual_machines() -> None:
    """The kubevirt driver's agent makes, starts, stops and deletes its guests' VMs and
    reads VMIs and its Node; no other agent may, and none reads Secrets or pods."""
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in _agent_rules({"agent.driver": "kubevirt"})
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted[("kubevirt.io", "virtualmachines")] == {
        "get",
        "create",
        "update",
        "patch",
        "delete",
    }
    assert granted[("kubevirt.io", "virtualmachineinstances")] == {"get"}
    assert granted[("", "nodes")] == {"get"}
    assert ("", "secrets") not in granted
    assert ("", "pods") not in granted
    for rule in _agent_rules({}):
        assert "kubevirt.io" not in rule["apiGroups"], rule
