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
from typing import Any

from kubenova.drivers import base
from kubenova.scheduling.amounts import Amount


@dataclasses.dataclass
class _Disk:
    vcpus: int
    memory_mib: int
    disk_gib: int
    image: str

    @classmethod
    def of(cls, guest: base.Guest) -> _Disk:
        f = guest.flavor
        return cls(f.vcpus, f.memory_mib, f.disk_gib, guest.image)


@dataclasses.dataclass
class _Guest:
    current: _Disk | None  # the defined guest (None between set-aside and finish)
    power: base.Power
    resize: _Disk | None = None  # the revert point, `<uuid>_resize`


class FakeDriver:
    name = "fake"

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
            power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
            self.guests[guest.uuid] = _Guest(current=_Disk.of(guest), power=power)
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
        self, uuid: str, *, same_host: bool, timeout: float
    ) -> None:
        await self._step("migrate_disk_and_power_off")
        g = self._get(uuid)
        g.power = base.Power.STOPPED
        if g.resize is None and g.current is not None:
            g.resize, g.current = g.current, (None if same_host else g.current)
        self._save()

    async def finish_migration(self, guest: base.Guest, *, same_host: bool) -> None:
        await self._step("finish_migration")
        g = self.guests.setdefault(guest.uuid, _Guest(current=None, power=base.Power.STOPPED))
        original = g.resize if same_host else None
        if original is not None and guest.flavor.disk_gib < original.disk_gib:
            raise base.DriverError("disks never shrink")
        g.current = _Disk.of(guest)
        g.power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
        self._save()

    async def confirm_migration(self, uuid: str, *, same_host: bool) -> None:
        await self._step("confirm_migration")
        if same_host:
            if uuid in self.guests:
                self.guests[uuid].resize = None
        else:
            self.guests.pop(uuid, None)
        self._save()

    async def finish_revert_migration(self, guest: base.Guest, *, same_host: bool) -> None:
        await self._step("finish_revert_migration")
        g = self._get(guest.uuid)
        if g.resize is not None:
            g.current, g.resize = g.resize, None
        g.power = base.Power.RUNNING if guest.power_on else base.Power.STOPPED
        self._save()

    async def destroy(self, uuid: str) -> None:
        await self._step("destroy")
        if self.guests.pop(uuid, None) is not None:
            self._save()

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        g = self.guests.get(uuid)
        if g is None or g.current is None:
            return None
        c = g.current
        return base.GuestInfo(
            power=g.power, vcpus=c.vcpus, memory_mib=c.memory_mib, disk_gib=c.disk_gib
        )

    async def list_guests(self) -> list[str]:
        return sorted(self.guests)

    def disk_path(self, uuid: str) -> pathlib.Path | None:
        return None  # nothing to transfer: a fake guest is only its record

    def incoming_disk(self, uuid: str) -> pathlib.Path | None:
        return None

    def has_revert_point(self, uuid: str) -> bool:
        g = self.guests.get(uuid)
        return g is not None and g.resize is not None

    def _get(self, uuid: str) -> _Guest:
        try:
            return self.guests[uuid]
        except KeyError:
            raise base.DriverError(f"no guest {uuid} on this node") from None
