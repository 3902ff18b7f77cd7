"""What the kind tests look at, the way a user of the cluster would: kubectl, the chart's
pods, and a guest's serial console read through the agent pod on its node."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import kube
from tests.e2e import guest

NAMESPACE = "kubenova-system"
# One worker runs every kind test (one cluster); the session fixture that brings the
# cluster up is not counted in a test's timeout.
MARKS = [pytest.mark.xdist_group("kind"), pytest.mark.timeout(900, func_only=True)]
INSTANCES = "/var/lib/kubenova/instances"  # the chart's agent.instancesPath
AGENT = "app.kubernetes.io/component=agent"
CONTROLLER = "app.kubernetes.io/component=controller"
TIMEOUT = 300  # TCG guests on kind workers that share 2 cores


def instance(kubectl: kube.Kubectl, name: str, namespace: str = "default") -> dict[str, Any]:
    return kubectl.get_json("instance", name, "-n", namespace)  # type: ignore[no-any-return]


def wait_phase(
    kubectl: kube.Kubectl, name: str, phase: str, namespace: str = "default"
) -> dict[str, Any]:
    """The instance once it rests in `phase` (no task in progress)."""

    def reached() -> dict[str, Any] | None:
        inst = instance(kubectl, name, namespace)
        status = inst.get("status", {})
        return inst if status.get("phase") == phase and not status.get("taskState") else None

    return kube.poll(reached, timeout=TIMEOUT, interval=1)  # type: ignore[no-any-return]


def resize(kubectl: kube.Kubectl, name: str, flavor: str) -> kube.Result:
    patch = json.dumps({"spec": {"flavor": flavor}})
    return kubectl.run("patch", "instance", name, "--type=merge", "-p", patch)


def annotate(kubectl: kube.Kubectl, name: str, key: str, value: str = "") -> None:
    kubectl("annotate", "instance", name, f"compute.kubenova.io/{key}={value}")


def pods(kubectl: kube.Kubectl, selector: str) -> list[dict[str, Any]]:
    listed = kubectl.get_json("pods", "-n", NAMESPACE, "-l", selector)
    return listed["items"]  # type: ignore[no-any-return]


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def agent_pod(kubectl: kube.Kubectl, node: str) -> str:
    found = [p["metadata"]["name"] for p in pods(kubectl, AGENT) if p["spec"]["nodeName"] == node]
    assert len(found) == 1, f"agent pods on {node}: {found}"
    return found[0]


def console(kubectl: kube.Kubectl, node: str, uuid: str) -> str:
    """The guest's serial console log on `node`, read inside that node's agent pod."""
    result = kubectl.run(
        "exec", "-n", NAMESPACE, agent_pod(kubectl, node), "--",
        "cat", f"{INSTANCES}/console/{uuid}.log",
    )  # fmt: skip
    return result.stdout if result.ok else ""


def reports(kubectl: kube.Kubectl, node: str, uuid: str) -> list[guest.Report]:
    """Every boot the guest reported on `node`, oldest first."""
    found = guest.LINE.findall(console(kubectl, node, uuid))
    return [guest.Report(int(c), int(m), int(d), marker, int(b)) for c, m, d, marker, b in found]


def last_report(kubectl: kube.Kubectl, node: str, uuid: str, boots: int = 1) -> guest.Report:
    """The guest's report of its `boots`-th boot or a later one (a TCG boot takes seconds)."""

    def booted() -> guest.Report | None:
        seen = reports(kubectl, node, uuid)
        return seen[-1] if seen and seen[-1].boots >= boots else None

    return kube.poll(booted, timeout=TIMEOUT, interval=2)  # type: ignore[no-any-return]


def leader(kubectl: kube.Kubectl) -> str:
    """The controller pod that holds the leader Lease (its identity is `<pod>_<suffix>`)."""
    lease = kubectl.get_json("lease", "kubenova-controller", "-n", NAMESPACE)
    holder = lease["spec"].get("holderIdentity") or ""
    return re.sub(r"_[0-9a-f]+$", "", holder)


# --- an agent's own token (the node policy) ------------------------------------------------

# Run inside a pod: one request with the pod's own service-account token; prints the HTTP
# status and the API server's answer. argv: method, path, body (JSON).
REQUEST_WITH_POD_TOKEN = """
import json, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
content = "application/merge-patch+json" if sys.argv[1] == "PATCH" else "application/json"
request = urllib.request.Request(
    "https://kubernetes.default.svc" + sys.argv[2], data=sys.argv[3].encode(),
    method=sys.argv[1],
    headers={"Authorization": "Bearer " + open(sa + "/token").read(), "Content-Type": content})
try:
    tls = ssl.create_default_context(cafile=sa + "/ca.crt")
    answer = urllib.request.urlopen(request, context=tls)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""

Request = Callable[[str, str, dict[str, Any]], tuple[int, str]]


@contextlib.contextmanager
def agent_token_on(kubectl: kube.Kubectl, node: str) -> Iterator[Request]:
    """A pod of the agent's ServiceAccount on `node`, holding its own node-bound token:
    `request(method, path, body)` sends one request with it, through real admission."""
    image = pods(kubectl, AGENT)[0]["spec"]["containers"][0]["image"]
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent-token-probe", "namespace": NAMESPACE},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "kubenova-agent",
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                }
            ],
        },
    }
    assert kubectl.apply(probe).ok
    try:
        kubectl("wait", "-n", NAMESPACE, "pod/agent-token-probe", "--for=condition=Ready",
                "--timeout=120s")  # fmt: skip

        def request(method: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
            out = kubectl(
                "exec", "-n", NAMESPACE, "agent-token-probe", "--",
                "python", "-c", REQUEST_WITH_POD_TOKEN, method, path, json.dumps(body),
            )  # fmt: skip
            code, _, text = out.partition(" ")
            return int(code), text

        yield request
    finally:
        kubectl.run("delete", "pod", "-n", NAMESPACE, "agent-token-probe", "--wait=true",
                    "--timeout=60s")  # fmt: skip


# --- KubeVirt (tests/kind/test_3_kubevirt*.py) ----------------------------------------------

KUBEVIRT_NODE = "kubenova-worker"


def kernel_image() -> str:
    """The test guest as the container image KubeVirt boots its kernel from."""
    script = kube.REPO / "hack" / "kubevirt" / "guest-image.sh"
    built = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    return built.stdout.split()[-1]


def launcher(kubectl: kube.Kubectl, vm: str) -> dict[str, Any] | None:
    """VirtualMachine `vm`'s launcher pod: the newest not being deleted (a handed-over VM's
    old one may linger)."""
    listed = kubectl.run("get", "pod", "-l", f"vm.kubevirt.io/name={vm}", "-o", "json")
    if not listed.ok:
        return None
    launchers = sorted(
        (p["metadata"]["creationTimestamp"], p["metadata"]["name"], p)
        for p in json.loads(listed.stdout)["items"]
        if not p["metadata"].get("deletionTimestamp")
    )
    return launchers[-1][2] if launchers else None


def vm_reports(kubectl: kube.Kubectl, vm: str) -> list[guest.Report]:
    """Every boot the guest of VirtualMachine `vm` reported in its current launcher pod
    (its serial console, the pod's guest-console-log container), oldest first."""
    pod = launcher(kubectl, vm)
    if pod is None:
        return []
    logs = kubectl.run("logs", pod["metadata"]["name"], "-c", "guest-console-log")
    found = guest.LINE.findall(logs.stdout if logs.ok else "")
    return [guest.Report(int(c), int(m), int(d), marker, int(b)) for c, m, d, marker, b in found]


def vm_booted(kubectl: kube.Kubectl, vm: str, boots: int) -> guest.Report:
    """The report of the guest's `boots`-th boot (its own counter, on its disk)."""

    def seen() -> guest.Report | None:
        found = vm_reports(kubectl, vm)
        return found[-1] if found and found[-1].boots == boots else None

    try:
        return kube.poll(seen, timeout=TIMEOUT, interval=2)  # type: ignore[no-any-return]
    except TimeoutError:
        shown = [
            kubectl.run("get", "vm,vmi,pods", "-o", "wide").stdout,
            kubectl.run("get", "vmi", vm, "-o", "jsonpath={.status.conditions}").stdout,
            kubectl.run("get", "events", "--sort-by=.lastTimestamp").stdout[-3000:],
            f"reports: {vm_reports(kubectl, vm)}",
        ]
        raise AssertionError(f"{vm}: no report of boot {boots}\n" + "\n".join(shown)) from None
