"""A Driver that times each lifecycle step of the driver it wraps.

The agent wraps its driver once (agent/main.py), so every step is measured without the
step code knowing: `kubenova_agent_step_duration_seconds{step, driver}`. Reads
(get_info, capacity, list_guests) pass through untimed: they run on every reconcile and
would drown the steps in samples.
"""

from __future__ import annotations

import pathlib

from kubenova.drivers import base
from kubenova.observability import metrics
from kubenova.scheduling.amounts import Amount


class Timed:
    def __init__(self, inner: base.Driver) -> None:
        self.inner = inner
        self.name = inner.name
        self.guest_overhead = inner.guest_overhead
        metrics.start_agent_series(inner.name)

    async def capacity(self) -> Amount:
        return await self.inner.capacity()

    async def spawn(self, guest: base.Guest) -> None:
        await metrics.timed_step("spawn", self.name, self.inner.spawn(guest))

    async def power_off(self, uuid: str, timeout: float) -> None:
        await metrics.timed_step("power_off", self.name, self.inner.power_off(uuid, timeout))

    async def power_on(self, uuid: str) -> None:
        await metrics.timed_step("power_on", self.name, self.inner.power_on(uuid))

    async def migrate_disk_and_power_off(
        self, uuid: str, *, migration: str, same_host: bool, timeout: float
    ) -> None:
        await metrics.timed_step(
            "migrate_disk_and_power_off",
            self.name,
            self.inner.migrate_disk_and_power_off(
                uuid, migration=migration, same_host=same_host, timeout=timeout
            ),
        )

    async def freeze_base(self, uuid: str, *, migration: str) -> bool:
        return await metrics.timed_step(
            "freeze_base", self.name, self.inner.freeze_base(uuid, migration=migration)
        )

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return await self.inner.prepare_incoming(uuid, migration=migration, owner=owner, part=part)

    async def finish_migration(self, guest: base.Guest, *, migration: str, same_host: bool) -> None:
        await metrics.timed_step(
            "finish_migration",
            self.name,
            self.inner.finish_migration(guest, migration=migration, same_host=same_host),
        )

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        await metrics.timed_step(
            "confirm_migration",
            self.name,
            self.inner.confirm_migration(uuid, migration=migration, same_host=same_host),
        )

    async def finish_revert_migration(
        self, guest: base.Guest, *, migration: str, same_host: bool
    ) -> None:
        await metrics.timed_step(
            "finish_revert_migration",
            self.name,
            self.inner.finish_revert_migration(guest, migration=migration, same_host=same_host),
        )

    async def resize_live(self, guest: base.Guest, *, migration: str) -> None:
        await metrics.timed_step(
            "resize_live", self.name, self.inner.resize_live(guest, migration=migration)
        )

    async def revert_live(
        self, guest: base.Guest, *, migration: str, timeout: float
    ) -> base.Reverted:
        return await metrics.timed_step(
            "revert_live",
            self.name,
            self.inner.revert_live(guest, migration=migration, timeout=timeout),
        )

    async def release_migration(self, uuid: str, *, migration: str) -> None:
        await metrics.timed_step(
            "release_migration", self.name, self.inner.release_migration(uuid, migration=migration)
        )

    async def destroy(self, uuid: str) -> None:
        await metrics.timed_step("destroy", self.name, self.inner.destroy(uuid))

    async def quarantine(self, uuid: str) -> list[pathlib.Path]:
        return await self.inner.quarantine(uuid)

    async def purge_quarantine(self, keep_seconds: float) -> list[str]:
        return await self.inner.purge_quarantine(keep_seconds)

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        return await self.inner.get_info(uuid)

    async def list_guests(self) -> list[str]:
        return await self.inner.list_guests()

    def owner(self, uuid: str) -> str | None:
        return self.inner.owner(uuid)

    def disk_path(
        self, uuid: str, *, migration: str, part: base.Part = base.Part.DISK
    ) -> pathlib.Path | None:
        return self.inner.disk_path(uuid, migration=migration, part=part)
