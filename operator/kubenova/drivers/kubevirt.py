"""The KubeVirt driver: Nova's steps for a guest that KubeVirt runs (docs/kubevirt.md).

The node's agent keeps each guest's disk as a raw file in the libvirt driver's layout
(`<root>/<uuid>/disk.img`, the revert point `<uuid>_resize/`, the same markers); KubeVirt
runs it as a VirtualMachine pinned to this node (drivers/vm.py), which the agent starts and
stops through `runStrategy` and changes only while it is stopped. Every resize is cold.

A guest has one VirtualMachine wherever it runs, and an agent writes only VMs pinned to its
own node (the chart's node policy). So a move between nodes hands the VM over: the source
deletes its (stopped) VM when it hands the disk off, the destination creates one pinned to
itself from the disk it received; a revert is the reverse (the destination deletes its VM
first, then the source creates its own again). The SMBIOS UUID is the instance uuid, so the
guest sees one machine throughout.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
import shutil
from typing import Any

from kubernetes_asyncio import client

from kubenova.drivers import base, layout, qcow2, vm
from kubenova.scheduling.amounts import Amount

DISK = "disk.img"
KERNEL_IMAGE = "kubevirt-kernel-image"  # in an image's directory: the kernel's container image
# A running VMI keeps the grace period it started with (only KubeVirt's stop subresource
# shortens it, and that subresource is served by virt-api, past the node policy): so every
# VM is made with the agent's shutdown timeout, and a stop patches its own in for the next.
GRACE_SECONDS = 30  # KubeVirt's default
CONFLICT_RETRIES = 5  # writes of a VM that others update too, each read afresh
QEMU_UID = 107  # the launcher's qemu user, which opens the disk
GROUP, VERSION = "kubevirt.io", "v1"
MERGE = "application/merge-patch+json"
INSTANCES = ("compute.kubenova.io", "v1alpha1", "instances")
COLD_ONLY = (
    "the kubevirt driver resizes cold: KubeVirt hot-plugs only through a live migration, "
    "which a node-local disk does not allow, and cannot unplug (docs/kubevirt.md)"
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pinned_to(machine: dict[str, Any]) -> str | None:
    selector = machine["spec"]["template"]["spec"].get("nodeSelector") or {}
    return selector.get(vm.HOSTNAME)


def _deleting(machine: dict[str, Any] | None) -> bool:
    """A VM being deleted (KubeVirt stops its VMI first, then lets it go): to kubenova it is
    gone already. Seen as stopped, it would pass for a guest that shut down by itself."""
    return bool(machine and machine["metadata"].get("deletionTimestamp"))


def _cpus(quantity: str) -> int:
    return int(quantity[:-1]) // 1000 if quantity.endswith("m") else int(quantity)


class KubeVirtDriver:
    name = "kubevirt"
    guest_overhead = vm.LAUNCHER_OVERHEAD

    def __init__(
        self,
        api: client.ApiClient,
        *,
        node: str,
        instances_path: pathlib.Path,
        images_path: pathlib.Path,
        wait_seconds: float = 300.0,
        grace_seconds: float = GRACE_SECONDS,
        poll_seconds: float = 1.0,
        node_instances_path: pathlib.Path | None = None,
    ) -> None:
        """`node_instances_path`: where the node itself has `instances_path` (the launcher's
        hostPath), when this process sees it elsewhere; the agent's pod mounts it at the
        same path, a test on the host sees kind's mount of it."""
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.node = node
        self.root = instances_path
        self.files = layout.Layout(instances_path)
        self.images = images_path
        self.wait_seconds = wait_seconds
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.on_node = layout.Layout(node_instances_path or instances_path)

    # --- observe ---------------------------------------------------------------------------

    def _where(self, uuid: str) -> tuple[str, str]:
        owner = self.files.owner(uuid)
        if not owner or "/" not in owner:
            raise base.DriverError(f"instance {uuid}: no owner recorded on {self.node}")
        namespace, name = owner.split("/", 1)
        return namespace, name

    async def _get(self, plural: str, uuid: str) -> dict[str, Any] | None:
        namespace, name = self._where(uuid)
        try:
            found = await self.objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        labels = found.get("metadata", {}).get("labels", {})
        if plural == "virtualmachines" and labels.get(vm.INSTANCE_LABEL) != uuid:
            raise base.DriverError(f"VirtualMachine {namespace}/{name} is not instance {uuid}'s")
        return found  # type: ignore[no-any-return]

    async def _wait(
        self, uuid: str, done: Any, what: str, plural: str = "virtualmachineinstances"
    ) -> None:
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while not done(await self._get(plural, uuid)):
            if asyncio.get_running_loop().time() > deadline:
                raise base.RetryLaterError(f"instance {uuid}: {what} after {self.wait_seconds}s")
            await asyncio.sleep(self.poll_seconds)

    def _running_here(self, vmi: dict[str, Any] | None) -> bool:
        status = (vmi or {}).get("status", {})
        return bool(status.get("phase") == "Running" and status.get("nodeName") == self.node)

    # --- act -------------------------------------------------------------------------------

    def _boot(self, image: str) -> vm.Boot | None:
        found = layout.read_marker(self.images / image / KERNEL_IMAGE)
        return vm.Boot(image=found) if found else None

    async def _apply(self, guest: base.Guest, *, running: bool) -> None:
        """The VM as `guest` says, created or replaced whole (only ever while it is stopped,
        or to start it). A stop sets its own grace period (`_stop`)."""
        namespace, name = self._where(guest.uuid)
        owner = await self.objects.get_namespaced_custom_object(
            *INSTANCES[:2], namespace, INSTANCES[2], name
        )
        made = vm.manifest(
            vm.Definition(
                name=name,
                namespace=namespace,
                owner_uid=owner["metadata"]["uid"],
                instance_uuid=guest.uuid,
                node=self.node,
                vcpus=guest.flavor.vcpus,
                memory_mib=guest.flavor.memory_mib,
                disk=self.on_node.dir(guest.uuid) / DISK,
                running=running,
                grace_seconds=int(self.grace_seconds),
                boot=self._boot(guest.image),
            )
        )
        for _ in range(CONFLICT_RETRIES):
            if await self._create_or_replace(guest.uuid, made):
                return
        raise base.RetryLaterError(
            f"instance {guest.uuid}: its VirtualMachine changed under {CONFLICT_RETRIES} writes"
        )

    async def _create_or_replace(self, uuid: str, made: dict[str, Any]) -> bool:
        """One write of `made`; False when the VM changed since it was read (409: another
        writer, e.g. virt-controller updating it), to be read and written again."""
        namespace, name = self._where(uuid)
        current = await self._get("virtualmachines", uuid)
        if _deleting(current):
            raise base.RetryLaterError(f"instance {uuid}: its VM is being deleted")
        try:
            if current is None:
                # A deleted VM (outside kubenova, or another node's after a hand-over)
                # leaves its VMI, and the launcher that has the disk open, for a while:
                # never two QEMUs on one disk.
                await self._wait(uuid, lambda vmi: vmi is None, "a deleted VM's VMI still runs")
                await self.objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "virtualmachines", made
                )
                return True
            pinned = _pinned_to(current)
            if pinned != self.node:
                raise base.RetryLaterError(
                    f"instance {uuid}: its VirtualMachine is still pinned to {pinned}, "
                    "whose agent hands it over first"
                )
            await self.objects.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, "virtualmachines", name, vm.replacing(current, made)
            )
            return True
        except client.ApiException as exc:
            if exc.status == 409:  # changed since read, or made meanwhile: read it again
                return False
            raise

    async def _run_strategy(self, uuid: str, strategy: str, grace: float | None = None) -> None:
        namespace, name = self._where(uuid)
        spec: dict[str, Any] = {"runStrategy": strategy}
        if grace is not None:
            spec["template"] = {"spec": {"terminationGracePeriodSeconds": max(0, int(grace))}}
        # The generated stub omits `_content_type`, which the call accepts.
        await self.objects.patch_namespaced_custom_object(  # type: ignore[call-arg]
            GROUP, VERSION, namespace, "virtualmachines", name, {"spec": spec}, _content_type=MERGE
        )

    async def _start(self, uuid: str) -> None:
        await self._run_strategy(uuid, "Always")
        await self._wait_running(uuid)

    async def _wait_running(self, uuid: str) -> None:
        await self._wait(uuid, self._running_here, f"not running on {self.node}")

    async def _stop(self, uuid: str, timeout: float) -> None:
        """ACPI, forced after `timeout` s (terminationGracePeriodSeconds); then until the VMI,
        and with it the launcher pod that held the disk open, is gone. Only this node's VM:
        one pinned elsewhere runs the guest there (after a move), not here."""
        current = await self._get("virtualmachines", uuid)
        if current is None or _pinned_to(current) != self.node:
            return
        await self._run_strategy(uuid, "Halted", timeout)
        await self._wait(uuid, lambda vmi: vmi is None, "still running")

    async def _hand_over(self, uuid: str) -> None:
        """Delete this node's VM (KubeVirt stops a VMI still running), then wait until the
        VMI, and the launcher that had the disk open, is gone, and the VM itself (its
        finalizer lets it go after the VMI): the next node to run the guest creates its own
        VM, pinned to itself. A VM pinned elsewhere is left alone."""
        current = await self._get("virtualmachines", uuid)
        if current is None or _pinned_to(current) != self.node:
            return
        namespace, name = self._where(uuid)
        try:
            await self.objects.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "virtualmachines", name
            )
        except client.ApiException as exc:
            if exc.status != 404:  # gone already: the same outcome
                raise
        await self._wait(uuid, lambda vmi: vmi is None, "its VMI is still there")
        plural = "virtualmachines"
        await self._wait(uuid, lambda machine: machine is None, "its VM is still there", plural)

    def _owned(self, path: pathlib.Path) -> None:
        for p in (path, *path.iterdir()) if path.is_dir() else (path,):
            os.chown(p, QEMU_UID, QEMU_UID)

    def _make_disk(self, guest: base.Guest) -> None:
        d = self.files.dir(guest.uuid)
        disk = d / DISK
        if not disk.exists():
            source = self.images / guest.image / "disk.qcow2"
            tmp = d / "disk.part"
            if source.exists():
                qcow2.qemu_img("convert", "-q", "-O", "raw", str(source), str(tmp))
            else:
                tmp.open("wb").close()
            tmp.rename(disk)  # a crash never leaves a half-made disk named `disk.img`
        self._grow(disk, guest.flavor.disk_gib)
        self._owned(d)

    @staticmethod
    def _grow(disk: pathlib.Path, gib: int) -> None:
        """To `gib` GiB; never shrinks (that would cut the guest's filesystem)."""
        current = disk.stat().st_size
        if gib * qcow2.GIB < current:
            raise base.DriverError(f"disks never shrink: {current // qcow2.GIB} GiB -> {gib} GiB")
        if gib * qcow2.GIB > current:
            os.truncate(disk, gib * qcow2.GIB)  # sparse: a raw disk grows by its length

    # --- the protocol ----------------------------------------------------------------------

    async def capacity(self) -> Amount:
        node = await self.core.read_node(self.node)
        allocatable = node.status.allocatable
        disk = shutil.disk_usage(self.root).total // qcow2.GIB if self.root.exists() else 0
        return Amount(_cpus(allocatable["cpu"]), vm.mebibytes(allocatable["memory"]), int(disk))

    async def spawn(self, guest: base.Guest) -> None:
        if guest.redefine and not (self.files.dir(guest.uuid) / DISK).exists():
            raise base.DriverError(base.no_disk_to_redefine(guest.uuid, self.root))
        self.files.set_owner(guest.uuid, guest.name)
        if not (self.images / guest.image).is_dir():
            raise base.DriverError(f"image {guest.image} not found on {self.node}")
        await asyncio.to_thread(self._make_disk, guest)
        current = await self._get("virtualmachines", guest.uuid)
        if _deleting(current):
            raise base.RetryLaterError(f"instance {guest.uuid}: its VM is being deleted")
        if current is not None:
            if guest.power_on:
                await self._start(guest.uuid)  # spawned before: only started here
            return
        await self._apply(guest, running=guest.power_on)
        if guest.power_on:
            await self._wait_running(guest.uuid)

    async def power_off(self, uuid: str, timeout: float) -> None:
        await self._stop(uuid, timeout)

    async def power_on(self, uuid: str) -> None:
        await self._start(uuid)

    async def migrate_disk_and_power_off(
        self, uuid: str, *, migration: str, same_host: bool, timeout: float
    ) -> None:
        await self._stop(uuid, timeout)
        if not same_host:
            if not (self.files.dir(uuid) / DISK).exists():
                raise base.DriverError(f"no disk for {uuid} on {self.node}")
            # The probe a destination on shared storage would see (Nova's
            # _is_storage_shared_with), written before the hand-off; it also says the guest
            # is off (disk_path serves the disk only then).
            self.files.probe(uuid, migration).touch()
            await self._hand_over(uuid)
            return
        await asyncio.to_thread(self._set_aside, uuid, migration)

    def _set_aside(self, uuid: str, migration: str) -> None:
        """`<uuid>` becomes the revert point `<uuid>_resize` by a rename (the original is
        never rewritten), and a sparse copy of its disk becomes the new `<uuid>`."""
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        if aside.exists() and self.files.set_aside_for(uuid) != migration:
            self._drop_stale_revert_point(uuid)
        if not aside.exists():
            layout.write_marker(d / layout.SET_ASIDE_FOR, migration)
            d.rename(aside)
        if (d / DISK).exists():
            return
        part = self.root / f"{uuid}.part"
        shutil.rmtree(part, ignore_errors=True)  # a copy a crash cut short: never the original
        part.mkdir()
        shutil.copy2(aside / layout.OWNER, part / layout.OWNER)
        if (aside / "image").exists():
            shutil.copy2(aside / "image", part / "image")
        qcow2.qemu_img("convert", "-q", "-f", "raw", "-O", "raw", "-S", "4k",
                       str(aside / DISK), str(part / DISK))  # fmt: skip
        self._owned(part)
        part.rename(d)

    def _drop_stale_revert_point(self, uuid: str) -> None:
        """A `<uuid>_resize` of another migration (deleted, or from before a crash of the
        controller's bookkeeping) is not this resize's revert point: `<uuid>` is the
        current data (a whole copy, never an overlay), so the stale one is quarantined.
        With no `<uuid>` disk there is no telling which is current: refused."""
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        holder = self.files.set_aside_for(uuid) or "<unknown>"
        if not (d / DISK).exists():
            raise base.DriverError(
                f"{aside} belongs to migration {holder} and {d} holds no disk: "
                "refusing to guess which copy is current"
            )
        where = self.files.quarantine_dir(aside.name, _now())
        where.parent.mkdir(parents=True, exist_ok=True)
        aside.rename(where)

    async def freeze_base(self, uuid: str, *, migration: str) -> bool:
        vmi = await self._get("virtualmachineinstances", uuid)
        if vmi is None:
            return False
        raise base.DriverError(f"no pre-copy: {COLD_ONLY}")

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return await asyncio.to_thread(self._prepare_incoming, uuid, migration, owner, part)

    def _prepare_incoming(
        self, uuid: str, migration: str, owner: str, part: base.Part
    ) -> pathlib.Path | None:
        if part is not base.Part.DISK:
            raise base.DriverError(f"no pre-copy: {COLD_ONLY}")
        return self.files.incoming(uuid, migration=migration, owner=owner, disk=DISK, now=_now())

    async def finish_migration(self, guest: base.Guest, *, migration: str, same_host: bool) -> None:
        d = self.files.dir(guest.uuid)
        if same_host and self.files.set_aside_for(guest.uuid) != migration:
            raise base.DriverError(
                f"revert point {self.files.aside(guest.uuid)} is missing or not this migration's"
            )
        if not same_host and (
            self.files.received_for(guest.uuid) != migration or not (d / DISK).exists()
        ):
            raise base.DriverError(f"no disk received for {guest.uuid} on {self.node}")
        await asyncio.to_thread(self._grow, d / DISK, guest.flavor.disk_gib)
        await asyncio.to_thread(self._owned, d)
        await self._apply(guest, running=guest.power_on)
        if guest.power_on:
            await self._wait_running(guest.uuid)

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        if not same_host:
            await self._confirm_elsewhere(uuid, migration)
            return
        holder = self.files.set_aside_for(uuid)
        if holder is None:
            return  # confirmed already
        if holder != migration:
            raise base.DriverError(f"revert point {self.files.aside(uuid)} is not this migration's")
        if not (self.files.dir(uuid) / DISK).exists():
            raise base.DriverError(f"instance {uuid}: no new disk; the revert point is kept")
        await asyncio.to_thread(shutil.rmtree, self.files.aside(uuid))

    async def _confirm_elsewhere(self, uuid: str, migration: str) -> None:
        """Source of a confirmed move: its copy goes, never the VM (the destination's now)
        and never a disk a VM of this node still names."""
        d = self.files.dir(uuid)
        if not d.exists():
            return  # done before a crash
        if self.files.received_for(uuid) == migration:
            # This migration's destination marked the source's directory: storage is shared
            # after all, and deleting would delete the guest that runs there.
            raise base.DriverError(f"{d} is a destination's copy too: not deleting it")
        current = await self._get("virtualmachines", uuid)
        if current is not None and _pinned_to(current) == self.node:
            raise base.DriverError(f"instance {uuid}: its VM still runs on {self.node}: kept")
        for p in (d, self.files.aside(uuid)):
            await asyncio.to_thread(shutil.rmtree, p, True)

    async def finish_revert_migration(
        self, guest: base.Guest, *, migration: str, same_host: bool
    ) -> None:
        if not same_host:
            # The source's files were never touched; the destination has deleted its VM
            # (the stage table runs its release first): this node's VM is made again.
            if not (self.files.dir(guest.uuid) / DISK).exists():
                raise base.DriverError(f"no original disk for {guest.uuid} on {self.node}")
            self.files.probe(guest.uuid, migration).unlink(missing_ok=True)
            await self._apply(guest, running=guest.power_on)
            if guest.power_on:
                await self._wait_running(guest.uuid)
            return
        uuid = guest.uuid
        holder = self.files.set_aside_for(uuid)
        if holder is not None and holder != migration:
            raise base.DriverError(
                f"revert point {self.files.aside(uuid)} belongs to migration {holder}: "
                "it never replaces the current disk"
            )
        if holder is None and self._running_here(await self._get("virtualmachineinstances", uuid)):
            return  # restored and started before a crash: the original runs
        if holder is not None:
            await self._stop(uuid, 0)  # the copy is discarded (the VMI keeps its own grace)
            await asyncio.to_thread(self._restore, uuid)
        await self._apply(guest, running=guest.power_on)  # stopped: the old flavor
        if guest.power_on:
            await self._wait_running(uuid)

    def _restore(self, uuid: str) -> None:
        """The copy goes, the revert point is `<uuid>` again (a rename), its marker last."""
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        if d.exists():
            where = self.files.quarantine_dir(f"{uuid}-reverted", _now())
            where.parent.mkdir(parents=True, exist_ok=True)
            d.rename(where)  # kept a while, not deleted: the sweep purges it
        aside.rename(d)
        (d / layout.SET_ASIDE_FOR).unlink(missing_ok=True)

    async def resize_live(self, guest: base.Guest, *, migration: str) -> None:
        raise base.DriverError(COLD_ONLY)

    async def revert_live(
        self, guest: base.Guest, *, migration: str, timeout: float
    ) -> base.Reverted:
        raise base.DriverError(COLD_ONLY)

    async def release_migration(self, uuid: str, *, migration: str) -> None:
        """Destination: the VM and disk built here for `migration` go, only if they are this
        migration's (a later migration may have built the guest that runs here now)."""
        if self.files.received_for(uuid) != migration:
            return
        current = await self._get("virtualmachines", uuid)
        if current is not None and _pinned_to(current) == self.node:
            await self._hand_over(uuid)  # deleting the VM stops its VMI: the copy is discarded
        await asyncio.to_thread(shutil.rmtree, self.files.dir(uuid), True)

    async def destroy(self, uuid: str) -> None:
        if self.files.owner(uuid) is None:
            return
        # Deleting this node's VM stops its VMI (another node's VM is its to delete).
        await self._hand_over(uuid)
        for p in (self.files.dir(uuid), self.files.aside(uuid)):
            await asyncio.to_thread(shutil.rmtree, p, True)

    async def quarantine(self, uuid: str) -> list[pathlib.Path]:
        await self._hand_over(uuid)  # as libvirt's undefine: no VM left naming the files
        return await asyncio.to_thread(self.files.quarantine, uuid, _now())

    async def purge_quarantine(self, keep_seconds: float) -> list[str]:
        return await asyncio.to_thread(self.files.purge_quarantine, _now(), keep_seconds)

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        disk = self.files.dir(uuid) / DISK
        if self.files.owner(uuid) is None:
            return None
        machine = await self._get("virtualmachines", uuid)
        if machine is None or _deleting(machine) or _pinned_to(machine) != self.node:
            return None  # no guest here: deleted, or another node's VM runs it (a move)
        disk_gib = disk.stat().st_size // qcow2.GIB if disk.exists() else 0
        vmi = await self._get("virtualmachineinstances", uuid)
        sizes = vm.sizes(vmi) if self._running_here(vmi) and vmi else None
        if sizes is not None:
            return base.GuestInfo(base.Power.RUNNING, sizes[0], sizes[1], disk_gib)
        domain = machine["spec"]["template"]["spec"]["domain"]
        vcpus = int(domain["cpu"]["sockets"])
        return base.GuestInfo(
            base.Power.STOPPED, vcpus, vm.mebibytes(domain["memory"]["guest"]), disk_gib
        )

    async def list_guests(self) -> list[str]:
        return self.files.instances()

    def owner(self, uuid: str) -> str | None:
        return self.files.owner(uuid)

    def disk_path(
        self, uuid: str, *, migration: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        """The raw disk, once the hand-off to `migration` began (the probe is written after
        the guest stopped, and a revert removes it before the guest starts again)."""
        disk = self.files.dir(uuid) / DISK
        if part is not base.Part.DISK or not self.files.probe(uuid, migration).exists():
            return None
        return disk if disk.exists() else None
