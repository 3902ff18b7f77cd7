"""What the kind tests look at, the way a user of the cluster would: kubectl, the chart's
pods, and a guest's serial console read through the agent pod on its node."""

from __future__ import annotations

import json
import re
import subprocess
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


# --- KubeVirt (tests/kind/test_3_kubevirt*.py) ----------------------------------------------

KUBEVIRT_NODE = "kubenova-worker"


def kernel_image() -> str:
    """The test guest as the container image KubeVirt boots its kernel from."""
    script = kube.REPO / "hack" / "kubevirt" / "guest-image.sh"
    built = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    return built.stdout.split()[-1]


def vm_reports(kubectl: kube.Kubectl, vm: str) -> list[guest.Report]:
    """Every boot the guest of VirtualMachine `vm` reported in its current launcher pod
    (its serial console, the pod's guest-console-log container), oldest first."""
    pod = kubectl.run("get", "pod", "-l", f"vm.kubevirt.io/name={vm}", "-o", "name")
    if not pod.ok or not pod.stdout.strip():
        return []
    logs = kubectl.run("logs", pod.stdout.split()[0], "-c", "guest-console-log")
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
