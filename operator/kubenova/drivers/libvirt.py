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

Live resize (the guest keeps running): every guest is defined with hot-plug headroom
(domain.py); vCPUs and virtio-mem memory are plugged into it, and a grown disk is an
external snapshot `<uuid>/disk.live` on the untouched `disk`, then grown. Revert unplugs
what was added where the guest lets go and the disk did not grow; otherwise it is cold and
exact (the overlay dropped, `disk` booted on the old flavor). Confirm commits the overlay
into `disk` (live, then pivots) and deletes it only once no definition uses it.

Cross-node pre-copy (the guest keeps running while its disk travels): `freeze_base` makes
the guest write to `<uuid>/disk.delta` (an external snapshot), so `disk` is a read-only
base the destination pulls while the guest runs; after power-off only the delta goes, and
the destination commits it into the base it received. The source's base and delta are the
original until confirm: a revert or a failure commits the delta back into `disk`.

Disk safety: no step takes an artefact it finds for done work unless it carries the
marker of the migration at hand; what is not trusted is refused or moved to quarantine,
never deleted, and the original survives every failure before confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from kubenova.scheduling.amounts import NO_OVERHEAD, Amount

log = logging.getLogger(__name__)

BLOCK_JOB_POLL = 0.2  # seconds between block-pull progress checks
UNPLUG_WAIT_SECONDS = 30.0  # how long a TCG guest gets to let go of memory on a live revert
MAX_HOTPLUG_VCPUS = 64  # the pc machine's hot-plug ceiling, whatever the ratio says
LIVE_DISK = "disk.live"
DELTA_DISK = "disk.delta"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # an image name: never a path
DISK = "disk"
TARGET = domain.TARGET


def _now() -> datetime.datetime:
    return clock.now()


class LibvirtDriver:
    name = "libvirt"
    guest_overhead = NO_OVERHEAD  # QEMU's own is the node's, as in Nova (reserved memory)

    def __init__(
        self,
        *,
        uri: str,
        instances_path: pathlib.Path,
        images_path: pathlib.Path | None = None,
        virt_type: str = "kvm",
        domain_prefix: str = "",
        hotplug_ratio: float = 4.0,
        unplug_wait_seconds: float = UNPLUG_WAIT_SECONDS,
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
        self.hotplug_ratio = hotplug_ratio
        self.unplug_wait_seconds = unplug_wait_seconds
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

    def _active_disk(self, uuid: str) -> pathlib.Path:
        """The disk the guest runs on: a live resize's or a pre-copy's overlay while it
        lasts (never both: a move starts only from a settled resize), else `disk`."""
        d = self.files.dir(uuid)
        for overlay in (LIVE_DISK, DELTA_DISK):
            if (d / overlay).exists():
                return d / overlay
        return d / DISK

    def _running(self, uuid: str) -> bool:
        dom = self._domain(uuid)
        return dom is not None and bool(dom.isActive())

    def _headroom(self, flavor: Amount) -> tuple[int, int]:
        """(vCPUs, memory MiB) a guest of `flavor` may grow to without a reboot."""
        if self.hotplug_ratio <= 1:
            return flavor.vcpus, flavor.memory_mib
        host_mib = int(self.conn.getInfo()[1])
        vcpus = min(int(flavor.vcpus * self.hotplug_ratio), MAX_HOTPLUG_VCPUS)
        memory = min(int(flavor.memory_mib * self.hotplug_ratio), host_mib)
        return max(vcpus, flavor.vcpus), max(memory, flavor.memory_mib)

    def _xml(self, guest: base.Guest, image: pathlib.Path) -> str:
        max_vcpus, max_memory = self._headroom(guest.flavor)
        return domain.xml(
            domain.Definition(
                virt_type=self.virt_type,
                name=self.domain_name(guest.uuid),
                uuid=self.domain_uuid(guest.uuid),
                instance_uuid=guest.uuid,
                description=guest.name,
                memory_mib=guest.flavor.memory_mib,
                vcpus=guest.flavor.vcpus,
                disk=self._active_disk(guest.uuid),
                console=self.console_log(guest.uuid),
                image=image,
                max_vcpus=max_vcpus,
                max_memory_mib=max_memory,
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
        if guest.redefine and not (d / DISK).exists():
            raise base.DriverError(base.no_disk_to_redefine(guest.uuid, self.files.root))
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
        if (d / DELTA_DISK).exists() and self.files.delta_for(uuid) != migration:
            # Another attempt's delta (its undo never finished): what the guest wrote is in
            # it, so the disk is made whole before anything hands it over or sets it aside.
            self._thaw_base(uuid)
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

    async def freeze_base(self, uuid: str, *, migration: str) -> bool:
        return await self._run(self._freeze_base, uuid, migration)  # type: ignore[no-any-return]

    def _freeze_base(self, uuid: str, migration: str) -> bool:
        d = self.files.dir(uuid)
        delta = d / DELTA_DISK
        if not (d / DISK).exists():
            raise base.DriverError(f"no disk for {uuid} on this node")
        if (d / LIVE_DISK).exists() or qcow2.backing_of(d / DISK) is not None:
            raise base.DriverError(f"{d / DISK} is not standalone: sent whole after power-off")
        # The probe a destination on shared storage would see, before anything is offered.
        self.files.probe(uuid, migration).touch()
        dom = self._domain(uuid)
        if dom is None or not dom.isActive():
            # Off: `disk` is stable as it is (a delta only if this pre-copy made one before
            # the guest stopped by itself).
            return delta.exists() and self.files.delta_for(uuid) == migration
        if _disk_source(dom) == str(delta):
            if self.files.delta_for(uuid) != migration:
                raise base.DriverError(f"{delta} is another migration's overlay: not this one's")
            return True  # done before a crash
        self._quarantine_unused(uuid, delta)
        layout.write_marker(d / layout.DELTA_FOR, migration)
        try:
            _snapshot(dom, delta)
        except libvirt.libvirtError as exc:
            raise base.DriverError(f"freezing the disk of {uuid}: {exc}") from exc
        try:
            # The next boot (the power-off below, a host restart) is on the delta too: were
            # it on `disk`, what the guest wrote since the freeze would look unused.
            self._repoint(dom, delta)
        except libvirt.libvirtError as exc:
            self._thaw_base(uuid)  # raising means no delta in use: nothing half-frozen
            raise base.DriverError(f"freezing the disk of {uuid}: {exc}") from exc
        faults.point("agent", "libvirt:base-frozen")
        return True

    def _quarantine_unused(self, uuid: str, overlay: pathlib.Path) -> None:
        """An overlay file no definition uses (an attempt that died before its snapshot):
        kept aside, never taken for this attempt's and never deleted."""
        if overlay.exists():
            where = self.files.quarantine_dir(f"{uuid}-{overlay.name}", _now())
            where.mkdir(parents=True, exist_ok=True)
            overlay.rename(where / overlay.name)

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return await self._run(self._prepare_incoming, uuid, migration, owner, part)  # type: ignore[no-any-return]

    def _prepare_incoming(
        self, uuid: str, migration: str, owner: str, part: base.Part
    ) -> pathlib.Path | None:
        d = self.files.dir(uuid)
        if part is base.Part.DELTA:
            if self.files.received_for(uuid) != migration or not (d / DISK).exists():
                raise base.DriverError(f"the delta of {uuid} came before its base disk")
            if self.files.assembled_for(uuid) == migration or (d / DELTA_DISK).exists():
                return None  # assembled already (the guest may run on it), or received
            return d / DELTA_DISK
        return self.files.incoming(uuid, migration=migration, owner=owner, disk=DISK, now=_now())

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
        else:
            self._assemble(guest.uuid, migration)
        qcow2.grow(disk, guest.flavor.disk_gib)
        faults.point("agent", "libvirt:grown")
        if faults.fail_once("agent", "libvirt:define"):
            raise base.DriverError(f"defining {guest.uuid}: injected failure")
        self._define(guest)
        faults.point("agent", "libvirt:defined")
        if guest.power_on:
            self._start(guest.uuid)

    def _assemble(self, uuid: str, migration: str) -> None:
        """A pre-copy's delta, received, committed into the base received before it (the
        guest is not started yet; once assembled, never again: it may run by now)."""
        d = self.files.dir(uuid)
        delta = d / DELTA_DISK
        if not delta.exists() or self.files.assembled_for(uuid) == migration:
            return
        qcow2.rebase_unsafe(delta, d / DISK)  # its header names the source's path
        qcow2.commit(delta)
        layout.write_marker(d / layout.ASSEMBLED_FOR, migration)
        faults.point("agent", "libvirt:assembled")
        delta.unlink()

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        await self._run(self._confirm, uuid, migration, same_host)

    def _confirm(self, uuid: str, migration: str, same_host: bool) -> None:
        d, aside = self.files.dir(uuid), self.files.aside(uuid)
        if same_host and (d / LIVE_DISK).exists():
            if self.files.live_for(uuid) != migration:
                raise base.DriverError(f"the live overlay of {uuid} is not this migration's: kept")
            self._commit_live(uuid)
            return
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

    def _commit_live(self, uuid: str) -> None:
        """A live resize confirmed: its overlay's data goes into `disk`, and the overlay is
        deleted only once no definition, live or persistent, uses it."""
        d = self.files.dir(uuid)
        # From here on `disk` is written: a revert could no longer give it back whole.
        layout.write_marker(d / layout.COMMITTING_FOR, self.files.live_for(uuid) or "")
        self._commit_overlay(uuid, d / LIVE_DISK, "libvirt:live-committed")
        (d / layout.LIVE_FOR).unlink(missing_ok=True)
        (d / layout.COMMITTING_FOR).unlink(missing_ok=True)

    def _commit_overlay(self, uuid: str, overlay: pathlib.Path, point: str) -> None:
        """`overlay`'s data into `disk` under it (live: an active block commit, then a
        pivot, the guest running on; off: qemu-img commit, which writes the same data
        again if repeated), then the overlay deleted once no definition uses it. The two
        read as the guest's disk throughout: a crash at any point loses nothing."""
        disk = overlay.parent / DISK
        dom = self._domain(uuid)
        if dom is None:
            raise base.DriverError(f"{uuid} has no domain: its overlay {overlay} is kept")
        if dom.isActive():
            if _disk_source(dom) == str(overlay):
                self._active_commit(dom, disk, overlay)
        elif _disk_source(dom) == str(overlay):
            qcow2.commit(overlay)
        faults.point("agent", point)
        self._repoint(dom, disk)
        if str(overlay) in (_disk_source(dom), _disk_source(dom, inactive=True)):
            raise base.DriverError(f"{uuid} still runs on {overlay}: it is kept, retried")
        overlay.unlink()

    @staticmethod
    def _active_commit(dom: libvirt.virDomain, disk: pathlib.Path, live: pathlib.Path) -> None:
        if not dom.blockJobInfo(TARGET, 0):
            active = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
            if faults.fail_once("agent", "libvirt:block-commit"):
                # A commit throttled to a byte a second, then aborted: a job that ends
                # without completing, as one hit by ENOSPC or an I/O error does.
                bytes_per_second = libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
                dom.blockCommit(TARGET, str(disk), str(live), 1, active | bytes_per_second)
                dom.blockJobAbort(TARGET, 0)
            else:
                dom.blockCommit(TARGET, str(disk), str(live), 0, active)
        while True:
            job = dom.blockJobInfo(TARGET, 0)
            if not job:
                raise base.DriverError(
                    f"block commit of {live} ended without completing: the overlay is kept "
                    "and the confirm will be retried"
                )
            if job["cur"] == job["end"]:
                with contextlib.suppress(libvirt.libvirtError):  # not ready yet: polled again
                    dom.blockJobAbort(TARGET, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                    return
            time.sleep(BLOCK_JOB_POLL)

    def _repoint(self, dom: libvirt.virDomain, disk: pathlib.Path) -> None:
        """The persistent definition names `disk` (a pivot may leave it at the overlay)."""
        root = ElementTree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        element = _root_disk(root)
        source = element.find("source") if element is not None else None
        if element is None or source is None or source.get("file") == str(disk):
            return
        source.set("file", str(disk))
        for backing in element.findall("backingStore"):
            element.remove(backing)
        self.conn.defineXML(ElementTree.tostring(root, "unicode"))

    @staticmethod
    def _live_backing(dom: libvirt.virDomain) -> str | None:
        disk = _root_disk(ElementTree.fromstring(dom.XMLDesc(0)))
        source = disk.find("backingStore/source") if disk is not None else None
        return source.get("file") if source is not None else None

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
        if (d / DELTA_DISK).exists():
            self._thaw_base(guest.uuid)
        self.files.probe(guest.uuid, migration).unlink(missing_ok=True)
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)

    def _thaw_base(self, uuid: str) -> None:
        """The original back as one disk: a pre-copy's delta (what the guest wrote since its
        base froze, running still if the move failed before power-off) committed into
        `disk`. An unused delta file is quarantined, never committed or deleted."""
        d = self.files.dir(uuid)
        delta = d / DELTA_DISK
        dom = self._domain(uuid)
        named = dom is not None and str(delta) in (
            _disk_source(dom),
            _disk_source(dom, inactive=True),
        )
        if not named:
            self._quarantine_unused(uuid, delta)
        else:
            self._commit_overlay(uuid, delta, "libvirt:base-thawed")
        (d / layout.DELTA_FOR).unlink(missing_ok=True)

    # --- the protocol: live resize ---------------------------------------------------------

    async def resize_live(self, guest: base.Guest, *, migration: str) -> None:
        await self._run(self._resize_live, guest, migration)

    def _resize_live(self, guest: base.Guest, migration: str) -> None:
        uuid, want = guest.uuid, guest.flavor
        dom = self._domain(uuid)
        if dom is None or not dom.isActive():
            raise base.DriverError(f"{uuid} is not running: a live resize needs the running guest")
        sizes = _Sizes.of(dom)
        if want.vcpus > sizes.max_vcpus or want.memory_mib > max(
            sizes.max_memory_mib, sizes.memory_mib
        ):
            raise base.DriverError(
                f"{uuid} can grow to {sizes.max_vcpus} vCPUs and {sizes.max_memory_mib} MiB "
                f"without a reboot, not {want.vcpus} and {want.memory_mib}"
            )
        if want.disk_gib * qcow2.GIB > dom.blockInfo(TARGET)[0]:
            self._live_overlay(dom, uuid, migration)
            faults.point("agent", "libvirt:live-overlay")
            dom.blockResize(
                TARGET, want.disk_gib * qcow2.GIB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
            )
        if want.memory_mib != sizes.memory_mib:
            self._plug_memory(dom, want.memory_mib - sizes.boot_mib)
        if want.vcpus != int(dom.info()[3]):
            dom.setVcpusFlags(want.vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        faults.point("agent", "libvirt:plugged")
        # The next boot (a host restart, a power cycle in VERIFY_RESIZE) is on the new
        # flavor and on the overlay, never on the original under it.
        self._define(guest)

    def _live_overlay(self, dom: libvirt.virDomain, uuid: str, migration: str) -> None:
        """An external snapshot: the guest writes to `disk.live` from now on and `disk`, the
        original, is left exactly as it was (the revert point of a live resize)."""
        d = self.files.dir(uuid)
        live = d / LIVE_DISK
        if _disk_source(dom) == str(live):
            if self.files.live_for(uuid) != migration:
                raise base.DriverError(f"{live} is another migration's overlay: not this one's")
            return  # done before a crash
        self._quarantine_unused(uuid, live)
        layout.write_marker(d / layout.LIVE_FOR, migration)
        _snapshot(dom, live)

    @staticmethod
    def _plug_memory(dom: libvirt.virDomain, requested_mib: int) -> None:
        """Set the virtio-mem device's requested size (what the guest is asked to hold)."""
        root = ElementTree.fromstring(dom.XMLDesc(0))
        device = root.find("devices/memory[@model='virtio-mem']")
        if device is None:
            raise base.DriverError("the guest has no virtio-mem device: memory cannot grow live")
        target = device.find("target")
        requested = target.find("requested") if target is not None else None
        assert target is not None
        assert requested is not None
        requested.set("unit", "KiB")
        requested.text = str(requested_mib * 1024)
        for current in target.findall("current"):  # the guest's answer, not ours to set
            target.remove(current)
        dom.updateDeviceFlags(
            ElementTree.tostring(device, "unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE
        )

    async def revert_live(
        self, guest: base.Guest, *, migration: str, timeout: float
    ) -> base.Reverted:
        return await self._run(self._revert_live, guest, migration, timeout)  # type: ignore[no-any-return]

    def _revert_live(self, guest: base.Guest, migration: str, timeout: float) -> base.Reverted:
        uuid, old = guest.uuid, guest.flavor
        d = self.files.dir(uuid)
        live = d / LIVE_DISK
        if live.exists() and self.files.committing_for(uuid) == migration:
            raise base.DriverError(
                f"a confirm of this resize began writing {live} into the original disk, which "
                "is no longer whole: the resize can only be confirmed (the guest runs on, "
                "nothing is lost)"
            )
        if live.exists() and self.files.live_for(uuid) == migration:
            why = "the disk grew: the guest is booted on its original disk and the old flavor"
            return self._revert_cold(guest, why, timeout, drop=live)
        dom = self._domain(uuid)
        if dom is None or not dom.isActive():
            return self._revert_cold(guest, "the guest is not running", timeout)
        try:
            sizes = _Sizes.of(dom)
            if sizes.memory_mib != old.memory_mib:
                self._plug_memory(dom, old.memory_mib - sizes.boot_mib)
                self._wait_unplugged(dom, old.memory_mib - sizes.boot_mib)
            if int(dom.info()[3]) != old.vcpus:
                dom.setVcpusFlags(old.vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except (libvirt.libvirtError, base.DriverError) as exc:
            return self._revert_cold(guest, f"the guest did not let go live ({exc})", timeout)
        self._define(guest)
        return base.Reverted(True, "unplugged on the running guest")

    def _wait_unplugged(self, dom: libvirt.virDomain, requested_mib: int) -> None:
        """The guest gives memory back at its own pace: wait until it holds no more than
        asked, or give up (the caller reverts cold)."""
        deadline = time.monotonic() + self.unplug_wait_seconds
        while _Sizes.of(dom).plugged_mib > requested_mib:
            if time.monotonic() > deadline:
                raise base.DriverError(
                    f"the guest still holds {_Sizes.of(dom).plugged_mib} MiB of hot-plugged "
                    f"memory after {self.unplug_wait_seconds:.0f}s, not {requested_mib}"
                )
            time.sleep(BLOCK_JOB_POLL)

    def _revert_cold(
        self, guest: base.Guest, why: str, timeout: float, drop: pathlib.Path | None = None
    ) -> base.Reverted:
        """Nova's revert: power off (within `timeout`, as any power-off), the original disk
        (`drop`, the overlay, goes), defined on the old flavor, started if it ran."""
        dom = self._domain(guest.uuid)
        if dom is not None and dom.isActive():
            if drop is not None:
                dom.destroy()  # what it wrote since the resize is discarded anyway
            else:
                self._stop(guest.uuid, timeout)
        faults.point("agent", "libvirt:live-reverting")
        if drop is not None:
            drop.unlink()  # before the definition: it must name `disk` again
            (drop.parent / layout.LIVE_FOR).unlink(missing_ok=True)
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)
        return base.Reverted(False, why)

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
        disk = self._active_disk(uuid)
        if dom is None or not disk.exists():
            return None
        state, _, _, vcpus, _ = dom.info()
        running = state == libvirt.VIR_DOMAIN_RUNNING
        sizes = _Sizes.of(dom)
        return base.GuestInfo(
            power=base.Power.RUNNING if running else base.Power.STOPPED,
            vcpus=int(vcpus),
            memory_mib=sizes.memory_mib,
            disk_gib=qcow2.virtual_gib(disk),
            max_vcpus=sizes.max_vcpus if running else 0,
            max_memory_mib=sizes.max_memory_mib if running else 0,
        )

    def disk_path(
        self, uuid: str, *, migration: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        """The file the source serves: only one set up for this migration's hand-off, and
        only while it cannot change (the guest off, or writing to this migration's delta)."""
        d = self.files.dir(uuid)
        if not self.files.probe(uuid, migration).exists():
            return None
        delta = d / DELTA_DISK
        frozen = delta.exists() and self.files.delta_for(uuid) == migration
        if delta.exists() and not frozen:
            return None  # another attempt's delta: `disk` alone is not the guest's disk
        if part is base.Part.DELTA:
            return delta if frozen and not self._running(uuid) else None
        disk = d / DISK
        return disk if disk.exists() and (frozen or not self._running(uuid)) else None

    async def list_guests(self) -> list[str]:
        return await self._run(self.files.instances)  # type: ignore[no-any-return]

    def owner(self, uuid: str) -> str | None:
        return self.files.owner(uuid)


def _root_disk(root: ElementTree.Element) -> ElementTree.Element | None:
    """The root disk's <disk> element in a domain definition."""
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == TARGET:
            return disk
    return None


def _snapshot(dom: libvirt.virDomain, overlay: pathlib.Path) -> None:
    """An external disk-only snapshot: the running guest writes to `overlay` from now on,
    and the file under it is left exactly as it was (read-only to QEMU)."""
    xml = (
        "<domainsnapshot><disks>"
        f"<disk name='{TARGET}' snapshot='external'><source file='{overlay}'/></disk>"
        "</disks></domainsnapshot>"
    )
    flags = (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    )
    dom.snapshotCreateXML(xml, flags)


def _disk_source(dom: libvirt.virDomain, *, inactive: bool = False) -> str | None:
    """The file the root disk's definition names (live, or the persistent one)."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    disk = _root_disk(ElementTree.fromstring(dom.XMLDesc(flags)))
    source = disk.find("source") if disk is not None else None
    return source.get("file") if source is not None else None


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """A domain's memory and vCPU ceiling, read from its (live) definition."""

    memory_mib: int  # boot memory plus what the virtio-mem device was asked to hold
    boot_mib: int  # the NUMA cell's memory (all of it without a virtio-mem device)
    plugged_mib: int  # what the virtio-mem device holds now (the guest's answer)
    max_vcpus: int
    max_memory_mib: int  # 0: no virtio-mem device, memory cannot grow live

    @classmethod
    def of(cls, dom: libvirt.virDomain) -> _Sizes:
        root = ElementTree.fromstring(dom.XMLDesc(0))
        vcpu = root.find("vcpu")
        max_vcpus = int(vcpu.text or 0) if vcpu is not None else 0
        device = root.find("devices/memory[@model='virtio-mem']/target")
        cell = root.find("cpu/numa/cell")
        if device is None or cell is None:
            total = _mib(root.find("memory"))
            return cls(total, total, 0, max_vcpus, 0)
        boot = _mib(cell, "memory")
        requested = _mib(device.find("requested"))
        return cls(
            memory_mib=boot + requested,
            boot_mib=boot,
            plugged_mib=_mib(device.find("current")),
            max_vcpus=max_vcpus,
            max_memory_mib=boot + _mib(device.find("size")),
        )


_UNITS = {
    "KiB": 1 / 1024,
    "k": 1 / 1024,
    "MiB": 1,
    "M": 1,
    "GiB": 1024,
    "G": 1024,
    "b": 1 / 1024**2,
}


def _mib(element: ElementTree.Element | None, attribute: str = "") -> int:
    """A libvirt size (an element's text, or an attribute's value) in MiB; KiB by default."""
    if element is None:
        return 0
    value = element.get(attribute) if attribute else element.text
    return int(int(value or 0) * _UNITS.get(element.get("unit", "KiB"), 1 / 1024))
