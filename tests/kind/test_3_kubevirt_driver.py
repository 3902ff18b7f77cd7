"""kubenova's KubeVirt driver (drivers/kubevirt.py) against the real KubeVirt in the kind
cluster: run on this host as a worker's agent would, on that worker's disk files (the
directory kind mounts there, hack/kind/cluster.sh), with the test guest reporting what it
sees. Nova's same-host resize: the original disk is set aside by a rename and survives
byte for byte; revert boots it again (the guest's own boot counter proves it is the
original, not the copy); a second resize is confirmed and the revert point goes."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import uuid as uuids
from collections.abc import Iterator
from typing import Any

import pytest

from kubenova.drivers import base, kubevirt
from kubenova.kube import client
from kubenova.scheduling.amounts import Amount
from tests import kube
from tests.kind import cluster

pytestmark = cluster.MARKS

NODE = cluster.KUBEVIRT_NODE

DISKS = kube.REPO / ".kubenova" / "kind" / "kubevirt" / "worker1"  # NODE's, as mounted
IMAGES = kube.REPO / ".kubenova" / "kind" / "images"  # cluster.sh's demo image `cirros`
NAME = "kv-driver"
FLAVOR = "kubevirt-driver-test-only"
TINY, BIGGER = Amount(1, 256, 1), Amount(2, 512, 2)
MIG, NEXT = str(uuids.uuid4()), str(uuids.uuid4())


def run(kubeconfig: pathlib.Path, step: Any) -> Any:
    """One driver step on a fresh driver (and client), as an agent restarted between steps."""

    async def go() -> Any:
        api = await client.connect(str(kubeconfig))
        try:
            driver = kubevirt.KubeVirtDriver(
                api,
                node=NODE,
                instances_path=DISKS,
                images_path=IMAGES,
                poll_seconds=2,
                node_instances_path=pathlib.Path("/var/lib/kubenova/kubevirt"),
            )
            return await step(driver)
        finally:
            await api.close()

    return asyncio.run(go())


@pytest.fixture
def instance(kind_cluster: pathlib.Path, kubectl: kube.Kubectl) -> Iterator[str]:
    """An Instance to own the VM. Its flavor fits no node (NoValidHost), so the controller
    places it nowhere and no agent touches it: the test is the only agent of this guest."""
    (IMAGES / "cirros" / kubevirt.KERNEL_IMAGE).write_text(cluster.kernel_image() + "\n")
    unplaceable = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": FLAVOR},
        "spec": {"vcpus": 512, "memoryMiB": 512, "diskGiB": 1},
    }
    assert kubectl.apply(unplaceable).ok
    # An earlier run's VM, which the driver rightly refuses to take for this uuid's.
    kubectl.run("delete", "vm", NAME, "--ignore-not-found", "--wait=true", "--timeout=120s")
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"flavor": FLAVOR, "image": "cirros"},
    }
    assert kubectl.apply(manifest).ok
    uuid = str(uuids.uuid4())
    yield uuid
    run(kind_cluster, lambda d: d.destroy(uuid))
    kubectl.run("delete", "instance", NAME, "--wait=true", "--timeout=120s")
    kubectl.run("delete", "flavor", FLAVOR)


def _guest(uuid: str, flavor: Amount) -> base.Guest:
    return base.Guest(
        uuid=uuid, flavor=flavor, image="cirros", power_on=True, name=f"default/{NAME}"
    )


def _set_aside(kubeconfig: pathlib.Path, uuid: str, mig: str) -> None:
    run(
        kubeconfig,
        lambda d: d.migrate_disk_and_power_off(uuid, migration=mig, same_host=True, timeout=30),
    )


def _finish(kubeconfig: pathlib.Path, uuid: str, mig: str) -> None:
    run(
        kubeconfig,
        lambda d: d.finish_migration(_guest(uuid, BIGGER), migration=mig, same_host=True),
    )


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_host_resize_revert_then_confirm_on_kubevirt(
    kind_cluster: pathlib.Path, kubectl: kube.Kubectl, instance: str
) -> None:
    uuid = instance
    run(kind_cluster, lambda d: d.spawn(_guest(uuid, TINY)))
    first = cluster.vm_booted(kubectl, NAME, 1)
    assert (first.cpus, first.boots) == (1, 1)
    info = run(kind_cluster, lambda d: d.get_info(uuid))
    assert (info.power, info.vcpus, info.memory_mib, info.disk_gib) == ("Running", 1, 256, 1)
    vmi = kubectl.get_json("vmi", NAME)
    assert vmi["status"]["nodeName"] == NODE
    owner = vmi["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "VirtualMachine"

    # Resize: powered off, the original set aside by a rename, a copy grown and booted.
    _set_aside(kind_cluster, uuid, MIG)
    _set_aside(kind_cluster, uuid, MIG)  # idempotent
    original = DISKS / f"{uuid}_resize" / kubevirt.DISK
    before = _sha(original)
    _finish(kind_cluster, uuid, MIG)
    grown = cluster.vm_booted(kubectl, NAME, 2)
    assert (grown.cpus, grown.marker, grown.boots) == (2, first.marker, 2)
    assert grown.disk_sectors == 2 * 1024**3 // 512
    vmi = kubectl.get_json("vmi", NAME)
    assert vmi["status"]["currentCPUTopology"]["sockets"] == 2
    assert vmi["status"]["memory"]["guestCurrent"] == "512Mi"
    assert _sha(original) == before  # the revert point was not opened

    # Revert: the original again, on the old flavor. Its own counter says 2, not 3: the
    # guest booted the disk as it was set aside, not the copy that counted boot 2.
    run(
        kind_cluster,
        lambda d: d.finish_revert_migration(_guest(uuid, TINY), migration=MIG, same_host=True),
    )
    back = cluster.vm_booted(kubectl, NAME, 2)
    assert (back.cpus, back.marker, back.disk_sectors) == (1, first.marker, first.disk_sectors)
    assert not (DISKS / f"{uuid}_resize").exists()
    spec = kubectl.get_json("vm", NAME)["spec"]["template"]["spec"]["domain"]
    assert spec["cpu"]["sockets"] == 1

    # Resize again, confirm: the revert point goes, the new guest runs on.
    _set_aside(kind_cluster, uuid, NEXT)
    _finish(kind_cluster, uuid, NEXT)
    cluster.vm_booted(kubectl, NAME, 3)
    run(kind_cluster, lambda d: d.confirm_migration(uuid, migration=NEXT, same_host=True))
    assert not (DISKS / f"{uuid}_resize").exists()
    info = run(kind_cluster, lambda d: d.get_info(uuid))
    assert (info.power, info.vcpus, info.memory_mib) == ("Running", 2, 512)
