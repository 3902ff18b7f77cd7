"""The fake driver: an in-memory hypervisor with configurable step latency.

Used for the controller's integration tests and the fleet benchmark; passes the same
contract tests as libvirt. With `state_file`, its guests survive an agent restart the
way real guests survive a libvirt agent restart (so kill tests mean something).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import time
from typing import Any

from kubenova.drivers import base
from kubenova.scheduling.amounts import NO_OVERHEAD, Amount

HOTPLUG_RATIO = 4  # headroom of a fake guest, times the flavor it was defined with


@dataclasses.dataclass
class _Disk:
    vcpus: int
    memory_mib: int
    disk_gib: int
    image: str
    max_vcpus: int = 0  # hot-plug ceiling, set when the guest is defined (spawn, cold steps)
    max_memory_mib: int = 0

    @classmethod
    def of(cls, guest: base.Guest) -> _Disk:
        f = guest.flavor
        return cls(
            f.vcpus,
            f.memory_mib,
            f.disk_gib,
            guest.image,
            f.vcpus * HOTPLUG_RATIO,
            f.memory_mib * HOTPLUG_RATIO,
        )


def _defined(disk: _Disk, guest: base.Guest) -> _Disk:
    """`disk` defined afresh for `guest`'s flavor (sizes and headroom; the disk keeps its size)."""
    fresh = _Disk.of(guest)
    return dataclasses.replace(fresh, disk_gib=disk.disk_gib, image=disk.image)


@dataclasses.dataclass
class _Guest:
    current: _Disk | None  # the defined guest (None between set-aside and finish)
    power: base.Power
    resize: _Disk | None = None  # the revert point, `<uuid>_resize`
    aside_for: str = ""  # uid of the Migration that set the revert point aside
    received_for: str = ""  # uid of the Migration this node received the guest for
    owner: str = ""  # namespace/name of the Instance


class FakeDriver:
    name = "fake"
    guest_overhead = NO_OVERHEAD

    def __init__(
        self,
        capacity: Amount,
        *,
        latency: float = 0.0,
        state_file: pathlib.Path | None = None,
        fail: frozenset[str] = frozenset(),
    ) -> None:
        self._capacity = capacity
        self.latency = latency
        self.state_file = state_file
        self.fail = fail  # method names that raise DriverError (failure-path tests)
        self.guests: dict[str, _Guest] = {}
        self.quarantined: dict[str, float] = {}  # uuid -> when (monotonic seconds)
        self._load()

    # --- persistence -----------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_file and self.state_file.exists():
            raw: dict[str, Any] = json.loads(self.state_file.read_text())
            self.guests = {
                uuid: _Guest(
                    current=_Disk(**g["current"]) if g["current"] else None,
                    power=base.Power(g["power"]),
                    resize=_Disk(**g["resize"]) if g["resize"] else None,
                    aside_for=g.get("aside_for", ""),
                    received_for=g.get("received_for", ""),
                    owner=g.get("owner", ""),
                )
                for uuid, g in raw.items()
            }

    def _save(self) -> None:
        if self.state_file:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({u: dataclasses.asdict(g) for u, g in self.guests.items()}))
            tmp.replace(self.state_file)  # atomic: a kill never leaves half a file

    async def _step(self, method: str) -> None:
        if method in self.fail:
            raise base.DriverError(f"injected failure in {method}")
        if self.latency:
            await asyncio.sleep(self.latency)

    # --- the protocol ----------------------------------------------------------------------

    async def capacity(self) -> Amount:
        return self._capacity

    async def spawn(self, guest: base.Guest) -> None:
        await self._step("spawn")
        if guest.uuid not in self.guests:
            if guest.redefine:
                raise base.DriverError(base.no_disk_to_redefine(guest.uuid, "memory"))
            power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
            self.guests[guest.uuid] = _Guest(current=_Disk.of(guest), power=power, owner=guest.name)
            self._save()

    async def power_off(self, uuid: str, timeout: float) -> None:
        await self._step("power_off")
        self._get(uuid).power = base.Power.STOPPED
        self._save()

    async def power_on(self, uuid: str) -> None:
        await self._step("power_on")
        self._get(uuid).power = base.Power.RUNNING
        self._save()

    async def migrate_disk_and_power_off(
        self, uuid: str, *, migration: str, same_host: bool, timeout: float
    ) -> None:
        await self._step("migrate_disk_and_power_off")
        g = self._get(uuid)
        g.power = base.Power.STOPPED
        if same_host and g.aside_for != migration:
            if g.current is None:
                raise base.DriverError(f"no disk for {uuid} on this node")
            # A stale revert point of another migration is dropped, never taken as done.
            g.resize, g.current, g.aside_for = g.current, None, migration
        self._save()

    async def freeze_base(self, uuid: str, *, migration: str) -> bool:
        await self._step("freeze_base")
        g = self._get(uuid)
        if g.current is None:
            raise base.DriverError(f"no disk for {uuid} on this node")
        return g.power is base.Power.RUNNING  # a running guest's writes would go to an overlay

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return None  # nothing to transfer: a fake guest is only its record

    async def finish_migration(self, guest: base.Guest, *, migration: str, same_host: bool) -> None:
        await self._step("finish_migration")
        g = self.guests.setdefault(guest.uuid, _Guest(current=None, power=base.Power.STOPPED))
        if same_host and g.aside_for != migration:
            raise base.DriverError(f"revert point of {guest.uuid} is not this migration's")
        original = g.resize if same_host else None
        if original is not None and guest.flavor.disk_gib < original.disk_gib:
            raise base.DriverError("disks never shrink")
        if not same_host:
            g.received_for = migration
        g.current = _Disk.of(guest)
        g.owner = guest.name or g.owner
        g.power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
        self._save()

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        await self._step("confirm_migration")
        if same_host:
            g = self.guests.get(uuid)
            if g is not None and g.resize is not None:
                if g.aside_for != migration:
                    raise base.DriverError(f"revert point of {uuid} is not this migration's")
                g.resize, g.aside_for = None, ""
        else:
            self.guests.pop(uuid, None)
        self._save()

    async def finish_revert_migration(
        self, guest: base.Guest, *, migration: str, same_host: bool
    ) -> None:
        await self._step("finish_revert_migration")
        g = self._get(guest.uuid)
        if same_host and g.resize is not None:
            if g.aside_for != migration:
                raise base.DriverError(f"revert point of {guest.uuid} is not this migration's")
            g.current, g.resize, g.aside_for = g.resize, None, ""
        if g.current is None:
            raise base.DriverError(f"no original disk for {guest.uuid} on this node")
        # The definition is the one the revert asks for; the disk is the original's.
        g.current = _defined(g.current, guest)
        g.power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
        self._save()

    async def resize_live(self, guest: base.Guest, *, migration: str) -> None:
        await self._step("resize_live")
        g = self._get(guest.uuid)
        c, f = g.current, guest.flavor
        if c is None or g.power is not base.Power.RUNNING:
            raise base.DriverError(f"{guest.uuid} is not running: nothing to resize live")
        if f.vcpus > c.max_vcpus or f.memory_mib > c.max_memory_mib:
            raise base.DriverError(f"{guest.uuid} has no headroom for {f}")
        if f.disk_gib > c.disk_gib and g.aside_for != migration:
            g.resize, g.aside_for = dataclasses.replace(c), migration  # the overlay's base
        g.current = dataclasses.replace(
            c, vcpus=f.vcpus, memory_mib=f.memory_mib, disk_gib=max(c.disk_gib, f.disk_gib)
        )
        self._save()

    async def revert_live(
        self, guest: base.Guest, *, migration: str, timeout: float
    ) -> base.Reverted:
        await self._step("revert_live")
        g = self._get(guest.uuid)
        if g.resize is not None and g.aside_for == migration:
            g.current, g.resize, g.aside_for = g.resize, None, ""
            reverted = base.Reverted(False, "the disk grew: the original disk is booted")
        elif "unplug" in self.fail:
            reverted = base.Reverted(False, "the guest did not let go of the added vCPUs")
        else:
            reverted = base.Reverted(True, "unplugged on the running guest")
        assert g.current is not None
        if reverted.live:  # the running guest keeps the headroom it booted with
            g.current = dataclasses.replace(
                g.current, vcpus=guest.flavor.vcpus, memory_mib=guest.flavor.memory_mib
            )
        else:
            g.current = _defined(g.current, guest)
        g.power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
        self._save()
        return reverted

    async def release_migration(self, uuid: str, *, migration: str) -> None:
        await self._step("release_migration")
        g = self.guests.get(uuid)
        if g is not None and g.received_for == migration:
            del self.guests[uuid]
            self._save()

    async def destroy(self, uuid: str) -> None:
        await self._step("destroy")
        if self.guests.pop(uuid, None) is not None:
            self._save()

    async def quarantine(self, uuid: str) -> list[pathlib.Path]:
        if self.guests.pop(uuid, None) is not None:
            self.quarantined[uuid] = time.monotonic()
            self._save()
        return []

    async def purge_quarantine(self, keep_seconds: float) -> list[str]:
        now = time.monotonic()
        old = [u for u, t in self.quarantined.items() if now - t >= keep_seconds]
        for u in old:
            del self.quarantined[u]
        return old

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        g = self.guests.get(uuid)
        if g is None or g.current is None:
            return None
        c = g.current
        running = g.power is base.Power.RUNNING
        return base.GuestInfo(
            power=g.power,
            vcpus=c.vcpus,
            memory_mib=c.memory_mib,
            disk_gib=c.disk_gib,
            max_vcpus=c.max_vcpus if running else 0,
            max_memory_mib=c.max_memory_mib if running else 0,
        )

    async def list_guests(self) -> list[str]:
        return sorted(self.guests)

    def owner(self, uuid: str) -> str | None:
        g = self.guests.get(uuid)
        return g.owner if g is not None else None

    def disk_path(
        self, uuid: str, *, migration: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return None  # nothing to transfer: a fake guest is only its record

    def has_revert_point(self, uuid: str) -> bool:
        g = self.guests.get(uuid)
        return g is not None and g.resize is not None

    def _get(self, uuid: str) -> _Guest:
        try:
            return self.guests[uuid]
        except KeyError:
            raise base.DriverError(f"no guest {uuid} on this node") from None
