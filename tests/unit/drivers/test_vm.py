"""The KubeVirt VM manifest (drivers/vm.py) and what it reads back from a VMI."""

from __future__ import annotations

import pathlib

import pytest

from kubenova.drivers import vm

UUID = "0b0e9c1e-1111-4222-8333-444455556666"


def definition(**changes: object) -> vm.Definition:
    fields: dict[str, object] = {
        "name": "web",
        "namespace": "team-a",
        "owner_uid": "uid-of-the-instance",
        "instance_uuid": UUID,
        "node": "kubenova-worker",
        "vcpus": 2,
        "memory_mib": 512,
        "disk": pathlib.Path(f"/var/lib/kubenova/kubevirt/{UUID}/disk.img"),
        "running": True,
        "grace_seconds": 20,
    }
    fields.update(changes)
    return vm.Definition(**fields)  # type: ignore[arg-type]


def test_the_vm_is_the_instances_pinned_to_its_node_on_the_agents_file() -> None:
    m = vm.manifest(definition())
    assert (m["metadata"]["name"], m["metadata"]["namespace"]) == ("web", "team-a")
    [owner] = m["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Instance", "web")
    assert owner["uid"] == "uid-of-the-instance"
    spec = m["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "kubenova-worker"}
    # KubeVirt must never create or size the file: type Disk, no capacity.
    [volume] = spec["volumes"]
    disk = f"/var/lib/kubenova/kubevirt/{UUID}/disk.img"
    assert volume["hostDisk"] == {"path": disk, "type": "Disk"}
    # virtio, so the guest sees /dev/vda (KubeVirt's default bus on amd64 is sata).
    assert spec["domain"]["devices"]["disks"][0]["disk"] == {"bus": "virtio"}
    assert spec["domain"]["cpu"]["sockets"] == 2
    assert spec["domain"]["memory"]["guest"] == "512Mi"
    assert spec["terminationGracePeriodSeconds"] == 20
    assert m["metadata"]["labels"][vm.INSTANCE_LABEL] == UUID


def test_a_replace_keeps_what_kubevirt_keeps_on_the_vm_and_writes_ours() -> None:
    current = vm.manifest(definition(vcpus=1, memory_mib=256, running=False))
    current["metadata"].update(
        resourceVersion="4711",
        uid="uid-of-the-vm",
        finalizers=["kubevirt.io/virtualMachineControllerFinalize"],
        annotations={"kubevirt.io/latest-observed-api-version": "v1"},
    )
    current["metadata"]["labels"]["team"] = "a"
    current["metadata"]["ownerReferences"] = []  # e.g. taken off by hand
    body = vm.replacing(current, vm.manifest(definition()))
    kept = body["metadata"]
    assert kept["resourceVersion"] == "4711"  # a write over a change since is refused (409)
    assert kept["uid"] == "uid-of-the-vm"
    assert kept["finalizers"] == ["kubevirt.io/virtualMachineControllerFinalize"]
    assert kept["annotations"] == {"kubevirt.io/latest-observed-api-version": "v1"}
    assert kept["labels"] == {"team": "a", vm.INSTANCE_LABEL: UUID}
    [owner] = kept["ownerReferences"]
    assert owner["uid"] == "uid-of-the-instance"
    assert body["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] == 2
    assert body["spec"]["runStrategy"] == "Always"


@pytest.mark.parametrize(("running", "strategy"), [(True, "Always"), (False, "Halted")])
def test_power_is_the_run_strategy(running: bool, strategy: str) -> None:
    assert vm.manifest(definition(running=running))["spec"]["runStrategy"] == strategy


def test_a_kernel_image_boots_the_kernel_else_the_disk() -> None:
    plain = vm.manifest(definition())["spec"]["template"]["spec"]["domain"]
    assert plain["firmware"] == {"uuid": UUID}  # the guest's SMBIOS UUID, wherever it runs
    booted = vm.manifest(definition(boot=vm.Boot(image="kubenova.local/guest-kernel:abc")))
    kernel = booted["spec"]["template"]["spec"]["domain"]["firmware"]["kernelBoot"]
    assert kernel["container"]["image"] == "kubenova.local/guest-kernel:abc"
    assert "console=ttyS0" in kernel["kernelArgs"]


def test_sizes_as_a_running_vmi_reports_them() -> None:
    # As KubeVirt v1.7.0 reported them in tests/kind/test_3_kubevirt.py.
    status = {
        "currentCPUTopology": {"cores": 1, "sockets": 2, "threads": 1},
        "memory": {"guestAtBoot": "512Mi", "guestCurrent": "512Mi", "guestRequested": "512Mi"},
    }
    assert vm.sizes({"status": status}) == (2, 512)
    assert vm.sizes({"status": {"phase": "Scheduling"}}) is None


@pytest.mark.parametrize(
    ("quantity", "mib"), [("512Mi", 512), ("1Gi", 1024), ("2048Ki", 2), (str(3 * 1024**2), 3)]
)
def test_mebibytes(quantity: str, mib: int) -> None:
    assert vm.mebibytes(quantity) == mib


def test_a_decimal_quantity_is_refused_not_misread() -> None:
    with pytest.raises(ValueError, match="not a binary quantity"):
        vm.mebibytes("512M")
