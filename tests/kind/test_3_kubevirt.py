"""Real KubeVirt v1.7.0 in the kind cluster (hack/kubevirt/, installed by hack/kind-e2e.sh),
checked for what kubenova's KubeVirt driver builds on (docs/kubevirt.md): the kubenova
test guest boots under TCG on the worker its VirtualMachine is pinned to, from a raw disk
file on that node (hostDisk); its own report reaches the VMI's serial console log; a
stop, new CPU and memory sizes and a start give the guest those sizes after one more
boot, with the disk's marker and boot counter intact, and the file is still there."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubenova.drivers import vm
from tests import kube
from tests.kind import cluster

pytestmark = cluster.MARKS

NODE = cluster.KUBEVIRT_NODE
DIR = "/var/lib/kubenova/kubevirt/platform-check"
MARKER = "KUBENOVA-MARKER-kubevirt"
VM = "platform-check"


def _node(*argv: str) -> str:
    done = subprocess.run(
        ["docker", "exec", NODE, *argv], capture_output=True, text=True, check=True
    )
    return done.stdout


def _vm(vcpus: int, memory: str) -> dict[str, Any]:
    boot = {
        "kernelArgs": "console=ttyS0 quiet panic=-1",
        "container": {
            "image": cluster.kernel_image(),
            "imagePullPolicy": "IfNotPresent",
            "kernelPath": "/boot/vmlinuz",
            "initrdPath": "/boot/initrd.img",
        },
    }
    domain = {
        "cpu": {"sockets": vcpus, "cores": 1, "threads": 1},
        "memory": {"guest": memory},
        "resources": {"requests": {"memory": memory}},
        "firmware": {"kernelBoot": boot},
        "devices": {
            "autoattachPodInterface": False,
            "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
        },
    }
    disk = {"path": f"{DIR}/disk.img", "type": "Disk"}
    template = {
        "nodeSelector": {"kubernetes.io/hostname": NODE},
        "terminationGracePeriodSeconds": 30,
        "domain": domain,
        "volumes": [{"name": "root", "hostDisk": disk}],
    }
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": VM, "namespace": "default"},
        "spec": {"runStrategy": "Always", "template": {"spec": template}},
    }


@pytest.fixture
def kubevirt(kubectl: kube.Kubectl) -> Iterator[kube.Kubectl]:
    kv = kubectl.get_json("kubevirt", "kubevirt", "-n", "kubevirt")
    assert kv["status"]["phase"] == "Deployed", kv["status"]
    # The disk as the agent will make it: raw, the marker in its first bytes, owned by
    # the launcher's qemu user (107).
    _node("mkdir", "-p", DIR)
    _node("sh", "-c", f"printf '{MARKER}\\n' > {DIR}/disk.img && truncate -s 1G {DIR}/disk.img")
    _node("chown", "-R", "107:107", DIR)
    yield kubectl
    kubectl.run("delete", "vm", VM, "--wait=true", "--timeout=120s")
    _node("rm", "-rf", DIR)


def test_a_guest_on_a_host_disk_keeps_its_data_across_a_cold_resize(
    kubevirt: kube.Kubectl,
) -> None:
    kubectl = kubevirt
    assert kubectl.apply(_vm(1, "256Mi")).ok
    first = cluster.vm_booted(kubectl, VM, 1)
    assert (first.cpus, first.marker, first.boots) == (1, MARKER, 1)
    vmi = kubectl.get_json("vmi", VM)
    assert vmi["status"]["nodeName"] == NODE

    # Nova's cold resize on KubeVirt: stop (ACPI, the guest powers itself off), new sizes,
    # start. The VMI goes away with the stop; the disk file stays.
    stop = json.dumps({"spec": {"runStrategy": "Halted"}})
    assert kubectl.run("patch", "vm", VM, "--type=merge", "-p", stop).ok
    try:
        kube.poll(lambda: not kubectl.run("get", "vmi", VM).ok, timeout=cluster.TIMEOUT)
    except TimeoutError:
        shown = kubectl.run("get", "vm,vmi,pods", "-o", "wide").stdout
        raise AssertionError(f"the VMI outlived its stop:\n{shown}") from None
    assert MARKER in _node("head", "-c", "64", f"{DIR}/disk.img")
    grown = _vm(2, "512Mi")
    grown["spec"]["runStrategy"] = "Always"
    assert kubectl.apply(grown).ok

    second = cluster.vm_booted(kubectl, VM, 2)
    assert (second.cpus, second.marker, second.boots) == (2, MARKER, 2)
    assert second.memtotal_kib > first.memtotal_kib + 200 * 1024  # 256 -> 512 MiB
    vmi = kubectl.get_json("vmi", VM)
    assert vmi["status"]["currentCPUTopology"]["sockets"] == 2
    assert vmi["status"]["memory"]["guestCurrent"] == "512Mi"
    # The file is the guest's disk, not a copy KubeVirt made: still raw, same size.
    size = _node("stat", "-c", "%s", f"{DIR}/disk.img").strip()
    assert size == str(1024**3)


def test_kubevirt_admits_the_vm_kubenovas_driver_makes(kubectl: kube.Kubectl) -> None:
    """drivers/vm.py's manifest, as the KubeVirt driver will create it, through the API
    server and KubeVirt's own admission webhook (a server-side dry run: nothing is made)."""
    made = vm.manifest(
        vm.Definition(
            name="admitted",
            namespace="default",
            owner_uid="00000000-0000-4000-8000-000000000001",
            instance_uuid="00000000-0000-4000-8000-000000000002",
            node=NODE,
            vcpus=2,
            memory_mib=512,
            disk=pathlib.Path(DIR) / "disk.img",
            running=True,
            grace_seconds=20,
            boot=vm.Boot(image=cluster.kernel_image()),
        )
    )
    result = kubectl.run(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(made)
    )
    assert result.ok, result.stderr
    admitted = json.loads(result.stdout)["spec"]["template"]["spec"]["volumes"][0]["hostDisk"]
    assert (admitted["path"], admitted["type"]) == (f"{DIR}/disk.img", "Disk")
    # KubeVirt's webhook refuses what it cannot run: a disk it would have to make is refused.
    made["spec"]["template"]["spec"]["volumes"][0]["hostDisk"]["capacity"] = "1Gi"
    refused = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(made))
    assert not refused.ok
    assert "capacity" in refused.stderr, refused.stderr
