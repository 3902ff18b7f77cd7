"""The virt driver protocol: Nova's virt driver subset that resize and migrate need.

Every method is idempotent: called again after a crash at any point, it finishes the
step or finds it done. No method destroys the original disk before confirm_migration.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
from typing import Protocol

from kubenova.scheduling.amounts import Amount


class Power(enum.StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"


@dataclasses.dataclass(frozen=True)
class Guest:
    """What to run: the instance uuid (domain name and UUID), its flavor, image and power."""

    uuid: str
    flavor: Amount
    image: str
    power_on: bool
    name: str = ""  # namespace/name, for logs and the domain's description only


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    power: Power
    vcpus: int
    memory_mib: int
    disk_gib: int


class DriverError(Exception):
    """A step failed; the message is shown to the user on the Migration and the Instance."""


class Driver(Protocol):
    name: str

    async def capacity(self) -> Amount:
        """Physical resources of this node (get_available_resource)."""
        ...

    async def spawn(self, guest: Guest) -> None: ...

    async def power_off(self, uuid: str, timeout: float) -> None:
        """Graceful shutdown for up to `timeout` seconds, then forced."""
        ...

    async def power_on(self, uuid: str) -> None: ...

    async def migrate_disk_and_power_off(
        self, uuid: str, *, same_host: bool, timeout: float
    ) -> None:
        """Source: power off and set the original aside (`<uuid>_resize`): the revert point."""
        ...

    async def finish_migration(self, guest: Guest, *, same_host: bool) -> None:
        """Destination: disk grown to the new flavor (never shrunk), definition, start."""
        ...

    async def confirm_migration(self, uuid: str, *, same_host: bool) -> None:
        """Source: delete the revert point (and, cross-host, the source guest)."""
        ...

    async def finish_revert_migration(self, guest: Guest, *, same_host: bool) -> None:
        """Source: drop the new guest (same host), restore the original, start if it ran."""
        ...

    async def destroy(self, uuid: str) -> None:
        """Remove everything this node holds for the instance (guest, disks, revert point)."""
        ...

    async def get_info(self, uuid: str) -> GuestInfo | None: ...

    async def list_guests(self) -> list[str]:
        """uuids of every instance this node holds anything for."""
        ...

    def disk_path(self, uuid: str) -> pathlib.Path | None:
        """The disk file a cross-node migration hands over; None if the driver keeps no
        files (the fake driver): then there is nothing to transfer."""
        ...

    def incoming_disk(self, uuid: str) -> pathlib.Path | None:
        """Where a destination writes a transferred disk before finish_migration."""
        ...
