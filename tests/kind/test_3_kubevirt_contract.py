"""The driver contract (tests/unit/drivers/test_contract.py) against the real KubeVirt in the
kind cluster: the same tests as fake and libvirt pass, run on this host as a worker's agent
would, on that worker's disk files (the directory kind mounts there), each VM a real
VirtualMachineInstance on the worker (a blank disk: no OS, only its power matters).

Left out, with the reason: the live-resize tests and the pre-copy of a running guest
(KubeVirt resizes cold: those steps are refused, tests/unit/drivers/test_kubevirt_files.py),
and the fake driver's own state file. KubeVirt guests have no hot-plug headroom, so the
contract's `running()` sizes carry none (HOTPLUG 0).
"""

from __future__ import annotations

import asyncio
import pathlib
import uuid as uuids
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiException

from kubenova.drivers import base, kubevirt
from kubenova.kube import client
from tests import kube
from tests.kind import cluster
from tests.unit.drivers import test_contract as contract
from tests.unit.drivers.test_contract import (  # noqa: F401 - collected here, on KubeVirt
    test_a_redefine_without_the_disk_makes_nothing_from_the_image,
    test_a_revert_point_of_another_migration_is_never_taken_for_this_ones,
    test_a_stopped_guests_disk_needs_no_freeze,
    test_cross_host_revert_powers_the_original_back_on,
    test_destroy_removes_everything_and_is_idempotent,
    test_power_off_and_on,
    test_quarantine_takes_the_guest_away_and_purge_waits,
    test_release_leaves_a_guest_that_is_not_this_migrations_alone,
    test_resize_then_confirm,
    test_same_host_resize_then_revert_restores_the_original,
    test_spawn_is_idempotent,
    test_steps_refuse_a_revert_point_that_is_not_this_migrations,
    test_stopped_instance_stays_stopped_through_a_resize,
)

pytestmark = cluster.MARKS

DISKS = kube.REPO / ".kubenova" / "kind" / "kubevirt" / "worker1"  # KUBEVIRT_NODE's
ON_NODE = pathlib.Path("/var/lib/kubenova/kubevirt")  # the same directory, in the node


class PerStep:
    """The KubeVirt driver with an API client of its own for each step: the contract runs
    every step in a new event loop (asyncio.run), and a client lives in the loop that made
    it. What a step reads and writes is only the cluster's and the node's files, as it is
    for an agent restarted between steps."""

    name = "kubevirt"

    def __init__(self, kubeconfig: pathlib.Path, images: pathlib.Path) -> None:
        self.kubeconfig, self.images = kubeconfig, images

    def _driver(self, api: Any) -> kubevirt.KubeVirtDriver:
        return kubevirt.KubeVirtDriver(
            api,
            node=cluster.KUBEVIRT_NODE,
            instances_path=DISKS,
            images_path=self.images,
            poll_seconds=1,
            wait_seconds=180,
            # A blank disk has no OS to answer ACPI: a graceful stop would only wait.
            grace_seconds=1,
            node_instances_path=ON_NODE,
        )

    def __getattr__(self, step: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            api = await client.connect(str(self.kubeconfig))
            try:
                return await getattr(self._driver(api), step)(*args, **kwargs)
            finally:
                await api.close()

        return call

    # The protocol's two plain reads touch only the node's files: the driver's own code,
    # with no client at all.
    def owner(self, uuid: str) -> str | None:
        return self._offline().owner(uuid)

    def disk_path(
        self, uuid: str, *, migration: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return self._offline().disk_path(uuid, migration=migration, part=part)

    def _offline(self) -> kubevirt.KubeVirtDriver:
        # Stored, never called: (None would make the generated API classes open a client.)
        return self._driver(object())


@pytest.fixture(scope="module")
def owner(kind_cluster: pathlib.Path) -> Iterator[None]:
    """The Instance every contract guest is made for (contract.OWNER). Its flavor fits no
    node (NoValidHost): no agent of the chart touches what the tests make for it."""
    kubectl = kube.Kubectl(kind_cluster)
    namespace, name = contract.OWNER.split("/")
    unplaceable = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": "kubevirt-contract-only"},
        "spec": {"vcpus": 512, "memoryMiB": 256, "diskGiB": 1},
    }
    instance = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": "kubevirt-contract-only", "image": "blank"},
    }
    assert kubectl.apply(unplaceable).ok
    assert kubectl.apply(instance).ok
    yield
    kubectl.run("delete", "instance", name, "-n", namespace, "--wait=true", timeout=120)


@pytest.fixture
def driver(
    kind_cluster: pathlib.Path,
    owner: None,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PerStep]:
    """The contract's `driver`, on KubeVirt: its helpers read these module globals."""
    monkeypatch.setattr(contract, "UUID", str(uuids.uuid4()))
    monkeypatch.setattr(contract, "HOTPLUG", 0)
    (tmp_path / "images" / contract.IMAGE).mkdir(parents=True)
    made = PerStep(kind_cluster, tmp_path / "images")
    yield made
    asyncio.run(made.destroy(contract.UUID))
    asyncio.run(made.purge_quarantine(0))  # what quarantine tests moved aside on the node


class Interfering(PerStep):
    """Another writer (as virt-controller is) changes the VM between the driver's read and
    its first write of each step: the API server refuses that write (409)."""

    def __init__(self, kubeconfig: pathlib.Path, images: pathlib.Path) -> None:
        super().__init__(kubeconfig, images)
        self.refused = 0

    def _driver(self, api: Any) -> kubevirt.KubeVirtDriver:
        made = super()._driver(api)
        objects, test = made.objects, self
        first = True

        class Racing:
            def __getattr__(self, name: str) -> Any:
                return getattr(objects, name)

            async def replace_namespaced_custom_object(self, *args: Any) -> Any:
                nonlocal first
                if first:
                    first = False
                    namespace, plural, name = args[2], args[3], args[4]
                    touched = {"metadata": {"annotations": {"kubenova-e2e/touched": "yes"}}}
                    await objects.patch_namespaced_custom_object(
                        kubevirt.GROUP,
                        kubevirt.VERSION,
                        namespace,
                        plural,
                        name,
                        touched,
                        _content_type=kubevirt.MERGE,
                    )
                    try:
                        return await objects.replace_namespaced_custom_object(*args)
                    except ApiException as exc:
                        test.refused += exc.status == 409
                        raise
                return await objects.replace_namespaced_custom_object(*args)

        made.objects = Racing()  # type: ignore[assignment]
        return made


def test_a_vm_changed_by_another_writer_is_read_and_written_again(
    driver: PerStep, kind_cluster: pathlib.Path
) -> None:
    kubectl = kube.Kubectl(kind_cluster)
    namespace, name = contract.OWNER.split("/")
    contract.run(driver.spawn(contract.guest(power_on=False)))

    def finalized() -> dict[str, Any] | None:  # virt-controller's finalizer, to be kept
        found = kubectl.get_json("vm", name, "-n", namespace)["metadata"]
        return found if found.get("finalizers") else None

    before = kube.poll(finalized, timeout=60, interval=1)
    contract.set_aside(driver)
    racing = Interfering(driver.kubeconfig, driver.images)
    contract.finish(racing, power_on=False)  # the contract's stopped resize, raced
    assert racing.refused == 1, "the API server refused the write over the other's change"
    after = kubectl.get_json("vm", name, "-n", namespace)
    assert after["metadata"]["uid"] == before["uid"]  # replaced, not made again
    assert after["metadata"]["annotations"]["kubenova-e2e/touched"] == "yes"
    assert after["metadata"]["finalizers"] == before["finalizers"]
    assert after["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] == contract.BIGGER.vcpus
    assert after["spec"]["runStrategy"] == "Halted"
    info = contract.run(driver.get_info(contract.UUID))
    assert info is not None
    assert (info.power, info.vcpus) == (base.Power.STOPPED, contract.BIGGER.vcpus)


def test_a_sources_confirm_keeps_a_disk_its_nodes_vm_still_names(
    driver: PerStep, kind_cluster: pathlib.Path
) -> None:
    """A confirm of a move whose hand-over never happened here (this node's VM still pinned
    to it, e.g. the Migration's record is wrong): nothing is deleted, the VM keeps its disk."""
    kubectl = kube.Kubectl(kind_cluster)
    namespace, name = contract.OWNER.split("/")
    contract.run(driver.spawn(contract.guest(power_on=False)))
    disk = DISKS / contract.UUID / kubevirt.DISK
    before = disk.stat().st_size
    with pytest.raises(base.DriverError, match="still runs on"):
        contract.confirm(driver, same_host=False)
    assert disk.stat().st_size == before
    machine = kubectl.get_json("vm", name, "-n", namespace)
    assert machine["spec"]["template"]["spec"]["volumes"][0]["hostDisk"]["path"] == str(
        ON_NODE / contract.UUID / kubevirt.DISK
    )
