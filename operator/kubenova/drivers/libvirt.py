"""The libvirt driver: real QEMU guests through libvirt-python (qemu:///system).

Layout under `instancesPath` (drivers/layout.py): `<uuid>/disk` (qcow2), `console/<uuid>.log`;
during a same-host resize the original directory is renamed `<uuid>_resize` (the revert
point, Nova's name), marked with the uid of the Migration that set it aside.

Same-host resize without a copy on the critical path: the original directory is renamed
(constant time) and the new disk is a qcow2 overlay backed by the original disk, grown
to the new size. Downtime does not depend on how much data the disk holds. Confirm then
makes the overlay standalone (a block pull, live if the guest runs) and deletes the
revert point only once the overlay is proven to need it no more; revert drops the overlay
and renames the original back. See docs/libvirt-driver.md.

Disk safety: no step takes an artefact it finds for done work unless it carries the
marker of the migration at hand; what is not trusted is refused or moved to quarantine,
never deleted, and the original survives every failure before confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import pathlib
import re
import shutil
import time
import uuid as uuids
from typing import Any
from xml.etree import ElementTree

import libvirt

from kubenova import clock, faults
from kubenova.drivers import base, domain, layout, qcow2
from kubenova.scheduling.amounts import Amount

log = logging.getLogger(__name__)

BLOCK_JOB_POLL = 0.2  # seconds between block-pull progress checks
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # an image name: never a path
DISK = "disk"
TARGET = domain.TARGET


def _now() -> datetime.datetime:
    return clock.now()


class LibvirtDriver:
    name = "libvirt"

    def __init__(
        self,
        *,
        uri: str,
        instances_path: pathlib.Path,
        images_path: pathlib.Path | None = None,
        virt_type: str = "kvm",
        domain_prefix: str = "",
    ) -> None:
        """`domain_prefix` lets several agents share one libvirtd (two simulated nodes on one
        machine): domain name and UUID are then derived from the prefix and the instance
        uuid. Empty (one agent per libvirtd, as on real nodes): both are the instance uuid."""
        self.domain_prefix = domain_prefix
        self.uri = uri
        self.root = instances_path
        self.files = layout.Layout(instances_path)
        self.images = images_path
        self.virt_type = virt_type
        (self.root / "console").mkdir(parents=True, exist_ok=True)
        self._conn: libvirt.virConnect | None = None

    # --- plumbing --------------------------------------------------------------------------

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def console_log(self, uuid: str) -> pathlib.Path:
        """One serial log per instance and node, kept across resize and revert (the
        instance directory is renamed during a resize; the console history should not be)."""
        return self.files.console(uuid)

    def domain_uuid(self, uuid: str) -> str:
        if not self.domain_prefix:
            return uuid
        return str(uuids.uuid5(uuids.NAMESPACE_URL, f"kubenova:{self.domain_prefix}:{uuid}"))

    def domain_name(self, uuid: str) -> str:
        return f"{self.domain_prefix}-{uuid}" if self.domain_prefix else uuid

    def _domain(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByUUIDString(self.domain_uuid(uuid))
        except libvirt.libvirtError:
            return None

    @staticmethod
    async def _run(fn: Any, *args: Any) -> Any:
        # libvirt-python and qemu-img block: keep them off the event loop.
        return await asyncio.to_thread(fn, *args)

    def _xml(self, guest: base.Guest, image: pathlib.Path) -> str:
        return domain.xml(
            domain.Definition(
                virt_type=self.virt_type,
                name=self.domain_name(guest.uuid),
                uuid=self.domain_uuid(guest.uuid),
                instance_uuid=guest.uuid,
                description=guest.name,
                memory_mib=guest.flavor.memory_mib,
                vcpus=guest.flavor.vcpus,
                disk=self.files.dir(guest.uuid) / DISK,
                console=self.console_log(guest.uuid),
                image=image,
            )
        )

    def _image(self, guest: base.Guest) -> pathlib.Path:
        """`spec.image` is the name of an image under `images_path` (a directory with
        `vmlinuz` + `initrd.img` and/or `disk.qcow2`, or a disk file). Never a path: a
        tenant must not make the agent (root) read the node's files into a disk."""
        if self.images is None or not NAME.match(guest.image):
            raise base.DriverError(
                f"image {guest.image!r} is not an image name: give the name of an image in "
                "the node's images path"
            )
        image = self.images / guest.image
        if not image.exists():
            raise base.DriverError(
                f"image {guest.image} not found on this node (looked in {self.images})"
            )
        return image

    def _define(self, guest: base.Guest) -> libvirt.virDomain:
        d = self.files.dir(guest.uuid)
        (d / "image").write_text(guest.image)
        if guest.name:
            self.files.set_owner(guest.uuid, guest.name)
        return self.conn.defineXML(self._xml(guest, self._image(guest)))

    def _start(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if dom is not None and not dom.isActive():
            dom.create()

    def _stop(self, uuid: str, timeout: float) -> None:
        """ACPI shutdown for up to `timeout` seconds, then destroy (Nova's clean shutdown);
        0 is a hard power-off at once."""
        dom = self._domain(uuid)
        if dom is None or not dom.isActive():
            return
        if timeout > 0:
            with contextlib.suppress(libvirt.libvirtError):  # no ACPI: forced below
                dom.shutdown()
            deadline = time.monotonic() + timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.1)
        if dom.isActive():
            dom.destroy()

    def _undefine(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefine()

    # --- the protocol: spawn and power -----------------------------------------------------

    async def capacity(self) -> Amount:
        info = await self._run(self.conn.getInfo)
        disk = shutil.disk_usage(self.root).total // qcow2.GIB
        return Amount(int(info[2]), int(info[1]), int(disk))

    async def spawn(self, guest: base.Guest) -> None:
        await self._run(self._spawn, guest)

    def _spawn(self, guest: base.Guest) -> None:
        d = self.files.dir(guest.uuid)
        d.mkdir(parents=True, exist_ok=True)
        self.files.set_owner(guest.uuid, guest.name)
        disk = d / DISK
        if not disk.exists():
            image = self._image(guest)
            base_disk = image / "disk.qcow2" if image.is_dir() else image
            tmp = d / "disk.part"
            if base_disk.exists():
                qcow2.convert(base_disk, tmp)
            else:
                qcow2.create(tmp, guest.flavor.disk_gib)
            tmp.rename(disk)  # a crash never leaves a half-copied disk named `disk`
        qcow2.grow(disk, guest.flavor.disk_gib)
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)

    async def power_off(self, uuid: str, timeout: float) -> None:
        await self._run(self._stop, uuid, timeout)

    async def power_on(self, uuid: str) -> None:
        await self._run(self._start, uuid)

    # --- the protocol: resize and migrate --------------------------------------------------

    async def migrate_disk_and_power_off(
        self, uuid: str, *, migration: str, same_host: bool, timeout: float
    ) -> None:
        await self._run(self._set_aside, uuid, migration, same_host, timeout)

    def _set_aside(self, uuid: str, migration: str, same_host: bool, timeout: float) -> None:
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        self._stop(uuid, timeout)
        faults.point("agent", "libvirt:stopped")
        if not same_host:
            if not (d / DISK).exists():
                raise base.DriverError(f"no disk for {uuid} on this node")
            # The probe a destination on shared storage would see (Nova's
            # _is_storage_shared_with): written before the hand-off starts.
            self.files.probe(uuid, migration).touch()
            return
        owner = self.files.set_aside_for(uuid)
        if owner == migration:
            return  # done before a crash
        if aside.exists():
            self._drop_stale_revert_point(uuid, owner)
        if not (d / DISK).exists():
            raise base.DriverError(f"no disk for {uuid} on this node")
        layout.write_marker(d / layout.SET_ASIDE_FOR, migration)
        d.rename(aside)  # constant time: the revert point
        faults.point("agent", "libvirt:renamed")

    def _drop_stale_revert_point(self, uuid: str, owner: str | None) -> None:
        """A `<uuid>_resize` of another migration (deleted, or from before a crash of the
        controller's bookkeeping) is not this resize's revert point. The current data is
        `<uuid>`; it may still be an overlay on the stale directory, so it is made
        standalone first (the guest is off), then the stale directory is quarantined."""
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        if not (d / DISK).exists():
            raise base.DriverError(
                f"{aside} belongs to migration {owner or '<unknown>'} and {d} holds no disk: "
                "refusing to guess which copy is current"
            )
        if qcow2.backing_of(d / DISK) is not None:
            qcow2.flatten(d / DISK)
        where = self.files.quarantine_dir(aside.name, _now())
        where.parent.mkdir(parents=True, exist_ok=True)
        aside.rename(where)
        log.warning("stale revert point of migration %s moved to %s", owner, where)

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str
    ) -> pathlib.Path | None:
        return await self._run(self._prepare_incoming, uuid, migration, owner)  # type: ignore[no-any-return]

    def _prepare_incoming(self, uuid: str, migration: str, owner: str) -> pathlib.Path | None:
        d = self.files.dir(uuid)
        if self.files.probe(uuid, migration).exists():
            raise base.DriverError(
                f"the source's instance directory is visible here ({d}): this node shares "
                "its instancesPath with the source, and moves across shared storage are "
                "not supported (docs/libvirt-driver.md)"
            )
        if self.files.received_for(uuid) == migration:
            return None if (d / DISK).exists() else d / DISK
        if d.exists():  # another attempt's leftovers: never taken for this migration's disk
            where = self.files.quarantine(uuid, _now())
            log.warning("leftovers of another attempt for %s moved to %s", uuid, where)
        d.mkdir(parents=True)
        self.files.set_owner(uuid, owner)
        layout.write_marker(d / layout.RECEIVED_FOR, migration)
        return d / DISK

    async def finish_migration(self, guest: base.Guest, *, migration: str, same_host: bool) -> None:
        await self._run(self._finish, guest, migration, same_host)

    def _finish(self, guest: base.Guest, migration: str, same_host: bool) -> None:
        d = self.files.dir(guest.uuid)
        disk = d / DISK
        if same_host:
            if self.files.set_aside_for(guest.uuid) != migration:
                raise base.DriverError(
                    f"revert point {self.files.aside(guest.uuid)} is missing or not this "
                    "migration's"
                )
            d.mkdir(exist_ok=True)
            if not disk.exists():
                original = self.files.aside(guest.uuid) / DISK
                tmp = d / "disk.part"
                qcow2.overlay(original, tmp)
                tmp.rename(disk)
                faults.point("agent", "libvirt:overlay-created")
        elif self.files.received_for(guest.uuid) != migration or not disk.exists():
            raise base.DriverError(f"no disk received for {guest.uuid} on this node")
        qcow2.grow(disk, guest.flavor.disk_gib)
        faults.point("agent", "libvirt:grown")
        if faults.fail_once("agent", "libvirt:define"):
            raise base.DriverError(f"defining {guest.uuid}: injected failure")
        self._define(guest)
        faults.point("agent", "libvirt:defined")
        if guest.power_on:
            self._start(guest.uuid)

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        await self._run(self._confirm, uuid, migration, same_host)

    def _confirm(self, uuid: str, migration: str, same_host: bool) -> None:
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        if not same_host:
            if self.files.received_for(uuid) == migration:
                # This migration's destination marked the source's directory: storage is
                # shared after all, and deleting would delete the guest that runs there.
                raise base.DriverError(f"{d} is a destination's copy too: not deleting it")
            self._destroy(uuid)
            return
        if not aside.exists():
            return  # done before a crash
        if self.files.set_aside_for(uuid) != migration:
            raise base.DriverError(f"revert point {aside} is not this migration's: kept")
        self._flatten(uuid)
        faults.point("agent", "libvirt:flattened")
        shutil.rmtree(aside)

    def _flatten(self, uuid: str) -> None:
        """Make `<uuid>/disk` standalone, proven by the image header and, for a running
        guest, the live definition: libvirt forgets a block job however it ended (done,
        aborted, ENOSPC, I/O error), so "no job any more" proves nothing."""
        disk = self.files.dir(uuid) / DISK
        if qcow2.backing_of(disk) is None:
            return
        dom = self._domain(uuid)
        if dom is not None and dom.isActive():
            # Live block pull: the guest keeps running while its overlay absorbs the
            # backing data; no downtime for the confirm.
            if faults.fail_once("agent", "libvirt:block-pull"):
                # A pull throttled to a byte a second, then aborted: a job that ends
                # without completing, as one hit by ENOSPC or an I/O error does.
                dom.blockPull(TARGET, 1, libvirt.VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES)
                dom.blockJobAbort(TARGET, 0)
            else:
                dom.blockPull(TARGET, 0, 0)
            while dom.blockJobInfo(TARGET, 0):
                time.sleep(BLOCK_JOB_POLL)
            live = self._live_backing(dom)
        else:
            qcow2.flatten(disk)
            live = None
        left = qcow2.backing_of(disk) or live
        if left is not None:
            raise base.DriverError(
                f"block pull of {disk} ended without completing: it still reads from {left}; "
                "the revert point is kept and the confirm will be retried"
            )

    @staticmethod
    def _live_backing(dom: libvirt.virDomain) -> str | None:
        root = ElementTree.fromstring(dom.XMLDesc(0))
        for disk in root.iterfind("devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == TARGET:
                source = disk.find("backingStore/source")
                return source.get("file") if source is not None else None
        return None

    async def finish_revert_migration(
        self, guest: base.Guest, *, migration: str, same_host: bool
    ) -> None:
        await self._run(self._revert, guest, migration, same_host)

    def _revert(self, guest: base.Guest, migration: str, same_host: bool) -> None:
        d, aside = self.files.dir(guest.uuid), self.files.aside(guest.uuid)
        if same_host and aside.exists():
            owner = self.files.set_aside_for(guest.uuid)
            if owner != migration:
                raise base.DriverError(
                    f"revert point {aside} belongs to migration {owner or '<unknown>'}: "
                    "it never replaces the current disk"
                )
            dom = self._domain(guest.uuid)
            if dom is not None and dom.isActive():
                dom.destroy()  # the new guest is discarded: no graceful shutdown needed
            faults.point("agent", "libvirt:new-destroyed")
            shutil.rmtree(d, ignore_errors=True)
            faults.point("agent", "libvirt:new-removed")
            aside.rename(d)
            faults.point("agent", "libvirt:original-restored")
        if not (d / DISK).exists():
            raise base.DriverError(f"no original disk for {guest.uuid} on this node")
        self.files.probe(guest.uuid, migration).unlink(missing_ok=True)
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)

    async def release_migration(self, uuid: str, *, migration: str) -> None:
        await self._run(self._release, uuid, migration)

    def _release(self, uuid: str, migration: str) -> None:
        """Destination: the guest built here for `migration` is not the truth. It goes,
        domain and files, only if it is this migration's: after a failed attempt, a later
        migration may have built the guest that runs here now."""
        if self.files.received_for(uuid) != migration:
            return
        self._undefine(uuid)
        shutil.rmtree(self.files.dir(uuid))
        self.console_log(uuid).unlink(missing_ok=True)

    # --- the protocol: removal -------------------------------------------------------------

    async def destroy(self, uuid: str) -> None:
        await self._run(self._destroy, uuid)

    def _destroy(self, uuid: str) -> None:
        self._undefine(uuid)
        for d in (self.files.dir(uuid), self.files.aside(uuid)):
            shutil.rmtree(d, ignore_errors=True)
        self.console_log(uuid).unlink(missing_ok=True)

    async def quarantine(self, uuid: str) -> list[pathlib.Path]:
        return await self._run(self._quarantine, uuid)  # type: ignore[no-any-return]

    def _quarantine(self, uuid: str) -> list[pathlib.Path]:
        self._undefine(uuid)
        return self.files.quarantine(uuid, _now())

    async def purge_quarantine(self, keep_seconds: float) -> list[str]:
        return await self._run(self.files.purge_quarantine, _now(), keep_seconds)  # type: ignore[no-any-return]

    # --- the protocol: reads ---------------------------------------------------------------

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        return await self._run(self._info, uuid)  # type: ignore[no-any-return]

    def _info(self, uuid: str) -> base.GuestInfo | None:
        dom = self._domain(uuid)
        disk = self.files.dir(uuid) / DISK
        if dom is None or not disk.exists():
            return None
        state, max_kib, _, vcpus, _ = dom.info()
        power = base.Power.RUNNING if state == libvirt.VIR_DOMAIN_RUNNING else base.Power.STOPPED
        size = qcow2.virtual_gib(disk)
        return base.GuestInfo(
            power=power, vcpus=int(vcpus), memory_mib=int(max_kib) // 1024, disk_gib=size
        )

    def disk_path(self, uuid: str, *, migration: str) -> pathlib.Path | None:
        """The disk the source serves: only one set up for this migration's hand-off."""
        disk = self.files.dir(uuid) / DISK
        return disk if disk.exists() and self.files.probe(uuid, migration).exists() else None

    async def list_guests(self) -> list[str]:
        return await self._run(self.files.instances)  # type: ignore[no-any-return]

    def owner(self, uuid: str) -> str | None:
        return self.files.owner(uuid)
