"""Instances on KubeVirt, driven the way a user drives them: the chart's agents switched to
`agent.driver=kubevirt` (helm upgrade), kubectl on Instances and annotations, and what
KubeVirt itself shows (`kubectl get vmi`) and the guest reports on its serial console.

The release runs one driver on every node (docs/kubevirt.md); this module switches it to
kubevirt for its tests, on the worker that kind mounts the KubeVirt disk directory into,
and back to libvirt afterwards. Nova's same-host resize: VERIFY_RESIZE shows the new sizes
in the VMI and in the guest, confirm drops the revert point, a second resize is reverted
to the first's flavor with the guest's disk as it was (its own boot counter proves it).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from kubenova.scheduling import amounts
from tests import helm, kube
from tests.e2e import guest
from tests.kind import cluster

pytestmark = cluster.MARKS

NODE = cluster.KUBEVIRT_NODE
DISKS = kube.REPO / ".kubenova" / "kind" / "kubevirt" / "worker1"  # NODE's, as kind mounts it
ON_NODE = "/var/lib/kubenova/kubevirt"  # the chart's agent.instancesPath for this module
PLACE = "kubenova-e2e/kubevirt"  # a Hypervisor label the Instances' nodeSelector names
NAME = "kv-guest"
FLAVORS = {"kv.small": (1, 256, 1), "kv.medium": (2, 512, 2), "kv.large": (2, 768, 3)}
GIB = guest.SECTORS_PER_GIB


def _upgrade(kubectl: kube.Kubectl, *sets: str) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods(kubectl, cluster.AGENT)}
    args = [f"--set={s}" for s in sets]
    upgrade = helm.Helm(kubectl.kubeconfig).run(
        "upgrade", helm.RELEASE, str(helm.CHART), "-n", helm.NAMESPACE, "--reuse-values",
        *args, "--wait", "--timeout", "5m", timeout=400,
    )  # fmt: skip
    assert upgrade.ok, upgrade.stderr

    def rolled() -> bool:
        now = cluster.pods(kubectl, cluster.AGENT)
        names = {p["metadata"]["name"] for p in now}
        return bool(names) and not names & before and all(cluster.pod_ready(p) for p in now)

    kube.poll(rolled, timeout=300, interval=2)


def _drivers(kubectl: kube.Kubectl) -> set[str]:
    listed = kubectl.get_json("hypervisors")["items"]
    return {h.get("status", {}).get("agent", {}).get("driver", "") for h in listed}


@pytest.fixture(scope="module")
def on_kubevirt(kind_cluster: pathlib.Path) -> Iterator[None]:
    kubectl = kube.Kubectl(kind_cluster)
    placed = [
        i["metadata"]["name"]
        for i in kubectl.get_json("instances", "-A")["items"]
        if i.get("status", {}).get("node")
    ]
    assert not placed, f"switching drivers under running guests: {placed}"
    for name, (vcpus, memory, disk) in FLAVORS.items():
        spec = {"vcpus": vcpus, "memoryMiB": memory, "diskGiB": disk}
        flavor = {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": name},
            "spec": spec,
        }
        assert kubectl.apply(flavor).ok
    kubectl("label", "hypervisor", NODE, f"{PLACE}=here", "--overwrite")
    _upgrade(kubectl, "agent.driver=kubevirt", f"agent.instancesPath={ON_NODE}")
    kube.poll(lambda: _drivers(kubectl) == {"kubevirt"}, timeout=120, interval=2)
    try:
        yield
    finally:
        kubectl.run("delete", "instance", NAME, "--ignore-not-found", "--wait=true", timeout=300)
        kubectl.run("label", "hypervisor", NODE, f"{PLACE}-")
        _upgrade(kubectl, "agent.driver=libvirt", "agent.instancesPath=/var/lib/kubenova/instances")
        kube.poll(lambda: _drivers(kubectl) == {"libvirt"}, timeout=120, interval=2)


def _vmi(kubectl: kube.Kubectl) -> dict[str, Any]:
    return kubectl.get_json("vmi", NAME)  # type: ignore[no-any-return]


def _vmi_sizes(kubectl: kube.Kubectl) -> tuple[int, str, str]:
    status = _vmi(kubectl)["status"]
    return (
        status["currentCPUTopology"]["sockets"],
        status["memory"]["guestCurrent"],
        status["nodeName"],
    )


def _usage(kubectl: kube.Kubectl) -> dict[str, int]:
    return kubectl.get_json("hypervisor", NODE)["status"].get("usage", {})  # type: ignore[no-any-return]


QUANTITY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _requested_mib(pod: dict[str, Any]) -> float:
    """The memory the scheduler reserves for a pod, MiB: its containers' requests and its
    sidecars' (init containers that keep running), or its largest other init container's
    if that is more (Kubernetes' effective request)."""

    def memory(c: dict[str, Any]) -> int:
        text = c.get("resources", {}).get("requests", {}).get("memory", "0")
        number = text.rstrip("kMGiK")
        return int(number) * QUANTITY[text[len(number) :]]

    inits = pod["spec"].get("initContainers", [])
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    running = sum(memory(c) for c in pod["spec"]["containers"] + sidecars)
    return max([running, *(memory(c) for c in inits if c not in sidecars)]) / 2**20


def _migrations(kubectl: kube.Kubectl) -> list[dict[str, Any]]:
    found = kubectl.get_json("migrations", "-l", f"compute.kubenova.io/instance={NAME}")
    return sorted(found["items"], key=lambda m: m["metadata"]["creationTimestamp"])


def _events(kubectl: kube.Kubectl, reason: str) -> list[str]:
    listed = kubectl.get_json(
        "events", "--field-selector", f"involvedObject.name={NAME},reason={reason}"
    )
    return [e["message"] for e in listed["items"]]


def test_resize_confirm_then_revert_on_kubevirt(kubectl: kube.Kubectl, on_kubevirt: None) -> None:
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"flavor": "kv.small", "image": "cirros", "nodeSelector": {PLACE: "here"}},
    }
    assert kubectl.apply(manifest).ok
    booted = cluster.wait_phase(kubectl, NAME, "ACTIVE")
    uuid = booted["status"]["uuid"]
    assert booted["status"]["node"] == NODE
    first = cluster.vm_booted(kubectl, NAME, boots=1)
    assert (first.cpus, first.disk_sectors) == (1, 1 * GIB), first
    # KubeVirt's own view: the VMI runs on the Instance's node, the VM is the Instance's.
    assert _vmi_sizes(kubectl) == (1, "256Mi", NODE)
    vm = kubectl.get_json("vm", NAME)
    assert vm["metadata"]["ownerReferences"][0]["uid"] == booted["metadata"]["uid"]
    assert (DISKS / uuid / "disk.img").is_file()

    # Resize 1 -> 2 vCPUs, 256 -> 512 MiB, 1 -> 2 GiB on the same node.
    assert cluster.resize(kubectl, NAME, "kv.medium").ok
    cluster.wait_phase(kubectl, NAME, "VERIFY_RESIZE")
    resized = cluster.vm_booted(kubectl, NAME, boots=2)
    assert (resized.cpus, resized.disk_sectors, resized.marker) == (2, 2 * GIB, first.marker)
    assert _vmi_sizes(kubectl) == (2, "512Mi", NODE)
    assert (DISKS / f"{uuid}_resize" / "disk.img").stat().st_size == 1 << 30  # the original
    (mig,) = _migrations(kubectl)
    assert (mig["spec"]["type"], mig["spec"]["mode"]) == ("resize", "cold"), mig["spec"]
    # The scheduler counts the memory Kubernetes reserves for the launcher pod beside the
    # guest's: what the Hypervisor reports, within a MiB of the pod's requests.
    overhead = kubectl.get_json("hypervisor", NODE)["status"]["agent"]["guestOverhead"]
    per_guest = amounts.Overhead(
        overhead["memoryMiB"], overhead["memoryMiBPerVCPU"], overhead["memoryMiBPerGiB"]
    )
    counted = per_guest.of(amounts.Amount(*FLAVORS["kv.medium"])).memory_mib
    pod = cluster.launcher(kubectl, NAME)
    assert pod is not None
    reserved = _requested_mib(pod) - 512
    requests = [
        (c["name"], c.get("resources", {}).get("requests"))
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    ]
    assert reserved <= counted < reserved + 1, (overhead, reserved, requests)
    kube.poll(lambda: _usage(kubectl).get("overheadMiB") == counted, timeout=60, interval=1)
    assert _usage(kubectl)["memoryMiB"] == 512  # the claim stays the flavor's
    assert mig["spec"]["modeReason"], mig["spec"]  # why not live, for the user

    cluster.annotate(kubectl, NAME, "resize", "confirm")
    confirmed = cluster.wait_phase(kubectl, NAME, "ACTIVE")
    assert confirmed["status"]["flavor"]["name"] == "kv.medium"
    assert not (DISKS / f"{uuid}_resize").exists(), "confirm keeps the revert point"

    # A second resize, reverted: kv.medium's sizes again, on the disk the guest had.
    assert cluster.resize(kubectl, NAME, "kv.large").ok
    cluster.wait_phase(kubectl, NAME, "VERIFY_RESIZE")
    grown = cluster.vm_booted(kubectl, NAME, boots=3)
    assert (grown.cpus, grown.disk_sectors) == (2, 3 * GIB), grown
    assert _vmi_sizes(kubectl) == (2, "768Mi", NODE)
    cluster.annotate(kubectl, NAME, "resize", "revert")
    reverted = cluster.wait_phase(kubectl, NAME, "ACTIVE")
    assert reverted["spec"]["flavor"] == "kv.medium"
    assert reverted["status"]["flavor"]["name"] == "kv.medium"
    # Boot 3 again, not 4: the guest booted the disk set aside at boot 2, not the copy.
    back = cluster.vm_booted(kubectl, NAME, boots=3)
    assert (back.cpus, back.disk_sectors, back.marker) == (2, 2 * GIB, first.marker), back
    assert _vmi_sizes(kubectl) == (2, "512Mi", NODE)
    assert not (DISKS / f"{uuid}_resize").exists()
    phases = [m["status"]["phase"] for m in _migrations(kubectl)]
    assert phases == ["confirmed", "reverted"], phases


def test_bad_resizes_say_why_and_keep_the_guest(kubectl: kube.Kubectl, on_kubevirt: None) -> None:
    """A disk down-size is refused by the API server; a flavor no node can take, by its
    size or with the launcher pod beside it, is NoValidHost on the Instance (condition and
    event); the guest runs on untouched."""
    if not kubectl.run("get", "instance", NAME).ok:
        pytest.fail("needs the instance of test_resize_confirm_then_revert_on_kubevirt")
    before = cluster.instance(kubectl, NAME)
    boots = cluster.vm_reports(kubectl, NAME)[-1].boots

    refused = cluster.resize(kubectl, NAME, "kv.small")
    assert not refused.ok
    assert "disks never shrink" in refused.stderr, refused.stderr

    huge = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": "kv.huge"},
        "spec": {"vcpus": 512, "memoryMiB": 512, "diskGiB": 3},
    }
    assert kubectl.apply(huge).ok
    assert cluster.resize(kubectl, NAME, "kv.huge").ok

    def failed() -> dict[str, Any] | None:
        conditions = cluster.instance(kubectl, NAME)["status"].get("conditions", [])
        found = [c for c in conditions if c["type"] == "ResizeFailed" and c["status"] == "True"]
        return found[0] if found else None

    condition = kube.poll(failed, timeout=120, interval=2)
    assert condition["reason"] == "NoValidHost", condition
    assert "no valid host" in condition["message"]
    assert any("no valid host" in m for m in _events(kubectl, "NoValidHost"))
    # Setting the flavor back cancels; the guest never stopped.
    patch = json.dumps({"spec": {"flavor": before["spec"]["flavor"]}})
    kubectl("patch", "instance", NAME, "--type=merge", "-p", patch)
    kube.poll(lambda: failed() is None, timeout=120, interval=2)
    assert cluster.instance(kubectl, NAME)["status"]["phase"] == "ACTIVE"

    # A flavor that fits the node by its size, not with its launcher pod: NoValidHost
    # before the guest is stopped, not a launcher left Pending with the guest down.
    capacity = kubectl.get_json("hypervisor", NODE)["status"]["agent"]["capacity"]
    brim = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": "kv.brim"},
        "spec": {"vcpus": 2, "memoryMiB": capacity["memoryMiB"] - 100, "diskGiB": 3},
    }
    assert kubectl.apply(brim).ok
    assert cluster.resize(kubectl, NAME, "kv.brim").ok
    condition = kube.poll(failed, timeout=120, interval=2)
    assert condition["reason"] == "NoValidHost", condition
    assert "short of memory" in condition["message"], condition
    kubectl("patch", "instance", NAME, "--type=merge", "-p", patch)
    kube.poll(lambda: failed() is None, timeout=120, interval=2)
    assert cluster.instance(kubectl, NAME)["status"]["phase"] == "ACTIVE"
    assert cluster.vm_reports(kubectl, NAME)[-1].boots == boots
    assert _vmi(kubectl)["status"]["phase"] == "Running"


def test_a_vm_deleted_behind_kubenovas_back_is_said_and_defined_again(
    kubectl: kube.Kubectl, on_kubevirt: None
) -> None:
    """kubectl delete vm: KubeVirt stops the guest and forgets it; the disk is the node's.
    The Instance says so (Ready=False, GuestMissing, a Warning), the agent defines the VM
    again from the kept disk, and the guest boots its own data (marker, counter + 1)."""
    if not kubectl.run("get", "instance", NAME).ok:
        pytest.fail("needs the instance of test_resize_confirm_then_revert_on_kubevirt")
    last = cluster.vm_reports(kubectl, NAME)[-1]
    uid = kubectl.get_json("vm", NAME)["metadata"]["uid"]
    kubectl("delete", "vm", NAME, "--wait=false")

    kube.poll(lambda: _events(kubectl, "GuestMissing"), timeout=120, interval=2)
    again = cluster.vm_booted(kubectl, NAME, boots=last.boots + 1)
    assert (again.marker, again.cpus, again.disk_sectors) == (
        last.marker,
        last.cpus,
        last.disk_sectors,
    ), again
    assert kubectl.get_json("vm", NAME)["metadata"]["uid"] != uid  # a new VM, the old disk
    inst = cluster.wait_phase(kubectl, NAME, "ACTIVE")
    ready = next(c for c in inst["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Running")
    assert _events(kubectl, "GuestRedefined")


def _probe_vm(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "policy-probe", "namespace": "default"},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "domain": {"devices": {}, "memory": {"guest": "64Mi"}},
                }
            },
        },
    }


def test_an_agent_may_make_virtual_machines_only_on_its_own_node(
    kubectl: kube.Kubectl, on_kubevirt: None
) -> None:
    """The agent's own node-bound token, real admission (server-side dry runs): a VM pinned
    to its node passes, one pinned to the other worker, or to none, is refused."""
    workers = sorted(p["spec"]["nodeName"] for p in cluster.pods(kubectl, cluster.AGENT))
    path = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines?dryRun=All"
    with cluster.agent_token_on(kubectl, workers[0]) as request:
        code, text = request("POST", path, _probe_vm(workers[0]))
        assert code == 201, text
        for elsewhere in (workers[1], ""):
            code, text = request("POST", path, _probe_vm(elsewhere))
            assert code == 403, text
            assert f"the kubenova agent on node {workers[0]} may write only" in text


def _pinned(kubectl: kube.Kubectl, name: str) -> str:
    vm = kubectl.get_json("vm", name)
    return vm["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"]  # type: ignore[no-any-return]


def _disks(node: str) -> pathlib.Path:
    """A worker's KubeVirt disk directory, as kind mounts it from this checkout."""
    return DISKS.parent / ("worker1" if node == NODE else "worker2")


def test_cold_migrate_between_workers_then_revert(kubectl: kube.Kubectl, on_kubevirt: None) -> None:
    """Nova's cold migrate on KubeVirt: the disk goes from one worker's agent to the other's
    (the agents' TLS transfer), the VM is handed over (deleted by the source, made by the
    destination, pinned to it), the guest boots its own data there; confirm cleans the
    source. A second migrate is reverted: the destination's copy goes, the original boots
    again where it was (its boot counter says so)."""
    name = "kv-mover"
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"flavor": "kv.small", "image": "cirros"},
    }
    assert kubectl.apply(manifest).ok
    try:
        booted = cluster.wait_phase(kubectl, name, "ACTIVE")
        uuid, first_node = booted["status"]["uuid"], booted["status"]["node"]
        first = cluster.vm_booted(kubectl, name, boots=1)

        cluster.annotate(kubectl, name, "migrate")
        moved = cluster.wait_phase(kubectl, name, "VERIFY_RESIZE")
        second_node = moved["status"]["node"]
        assert second_node != first_node
        there = cluster.vm_booted(kubectl, name, boots=2)
        assert (there.marker, there.cpus, there.disk_sectors) == (first.marker, 1, 1 * GIB)
        assert _pinned(kubectl, name) == second_node
        assert kubectl.get_json("vmi", name)["status"]["nodeName"] == second_node
        assert (_disks(first_node) / uuid / "disk.img").exists()  # kept until confirm
        cluster.annotate(kubectl, name, "resize", "confirm")
        cluster.wait_phase(kubectl, name, "ACTIVE")
        kube.poll(lambda: not (_disks(first_node) / uuid).exists(), timeout=60, interval=1)
        assert (_disks(second_node) / uuid / "disk.img").exists()

        # Back to the first worker, reverted: the guest runs on the second again, booting
        # the disk it had there (boot 3, as the copy did; a boot of the copy would say 4).
        cluster.annotate(kubectl, name, "migrate")
        cluster.wait_phase(kubectl, name, "VERIFY_RESIZE")
        assert cluster.vm_booted(kubectl, name, boots=3).marker == first.marker
        assert _pinned(kubectl, name) == first_node
        cluster.annotate(kubectl, name, "resize", "revert")
        reverted = cluster.wait_phase(kubectl, name, "ACTIVE")
        assert reverted["status"]["node"] == second_node
        back = cluster.vm_booted(kubectl, name, boots=3)
        assert (back.marker, back.disk_sectors) == (first.marker, 1 * GIB)
        assert _pinned(kubectl, name) == second_node
        assert not (_disks(first_node) / uuid).exists(), "revert keeps the destination's copy"
        migrations = kubectl.get_json("migrations", "-l", f"compute.kubenova.io/instance={name}")
        phases = sorted(
            (m["metadata"]["creationTimestamp"], m["status"]["phase"]) for m in migrations["items"]
        )
        assert [p for _, p in phases] == ["confirmed", "reverted"], phases
    finally:
        kubectl.run("delete", "instance", name, "--wait=true", timeout=300)
