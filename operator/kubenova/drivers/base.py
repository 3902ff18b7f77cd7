"""The virt driver protocol: Nova's virt driver subset that resize and migrate need.

Every method is idempotent: called again after a crash at any point, it finishes the
step or finds it done, and "done" is judged by markers naming the Migration (its uid), so
an artefact of another attempt is never taken for this one's work. No method destroys
the original disk before confirm_migration; only destroy (the Instance is being deleted)
removes a guest's files outright, and the orphan sweep only quarantines them.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
from typing import Protocol

from kubenova.api import migration
from kubenova.scheduling.amounts import Amount, Overhead

Part = migration.Part  # the transfer's parts, named where the Migration records them


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
    # Define the guest again from the disk this node kept (it was deleted outside kubenova):
    # a spawn that finds no disk fails rather than make a fresh one from the image.
    redefine: bool = False


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    power: Power
    vcpus: int
    memory_mib: int
    disk_gib: int
    max_vcpus: int = 0  # what the running guest can grow to without a reboot (0: no headroom)
    max_memory_mib: int = 0


@dataclasses.dataclass(frozen=True)
class Reverted:
    """How revert_live gave the old sizes back."""

    live: bool  # unplugged on the running guest; False: powered off and booted on them
    reason: str


class DriverError(Exception):
    """A step failed; the message is shown to the user on the Migration and the Instance."""


def no_disk_to_redefine(uuid: str, where: object) -> str:
    return (
        f"instance {uuid}: its guest was deleted outside kubenova and no disk is left in "
        f"{where} to define it again from; nothing is made from the image in its place"
    )


class RetryLaterError(Exception):
    """A step could not finish now for a passing reason (the source agent restarting, a
    reset connection) and is tried again later, resuming where it stopped; not a failure."""


class Driver(Protocol):
    name: str
    # Memory spent beside each guest, outside its flavor; the scheduler counts it
    # (Nova's estimate_instance_overhead). The Hypervisor reports it.
    guest_overhead: Overhead

    async def capacity(self) -> Amount:
        """Physical resources of this node (get_available_resource)."""
        ...

    async def spawn(self, guest: Guest) -> None: ...

    async def power_off(self, uuid: str, timeout: float) -> None:
        """Graceful shutdown for up to `timeout` seconds, then forced."""
        ...

    async def power_on(self, uuid: str) -> None: ...

    async def migrate_disk_and_power_off(
        self, uuid: str, *, migration: str, same_host: bool, timeout: float
    ) -> None:
        """Source: power off; same host, set the original aside (`<uuid>_resize`, the revert
        point, marked as `migration`'s); cross-node, leave the probe a destination on shared
        storage would see. A revert point of another migration is never taken as done."""
        ...

    async def freeze_base(self, uuid: str, *, migration: str) -> bool:
        """Source, cross-node, before power-off (a pre-copy): the running guest writes to an
        overlay marked as `migration`'s from now on, so its disk, now a read-only base, can
        be sent while it runs. True: an overlay was made (it is sent after power-off);
        False: the guest is off, its disk is stable as it is. Raises when neither can be
        said (the caller skips the pre-copy); the data is the original's either way."""
        ...

    async def prepare_incoming(
        self, uuid: str, *, migration: str, owner: str, part: Part = Part.DISK
    ) -> pathlib.Path | None:
        """Destination, cross-node: where to write `part` received for `migration`, or None
        when there is nothing to receive (no files kept, or already received). Refuses
        when this node sees the source's files (shared storage); leftovers of other
        attempts are moved to quarantine, never reused. A delta comes after its disk, and
        finish_migration assembles the two."""
        ...

    async def finish_migration(self, guest: Guest, *, migration: str, same_host: bool) -> None:
        """Destination: disk grown to the new flavor (never shrunk), definition, start."""
        ...

    async def confirm_migration(self, uuid: str, *, migration: str, same_host: bool) -> None:
        """Source: delete the revert point once the new disk is proven standalone (same
        host; after a live resize, the overlay committed into the disk), or the source
        guest (cross-host). Raises, keeping everything, otherwise."""
        ...

    async def finish_revert_migration(
        self, guest: Guest, *, migration: str, same_host: bool
    ) -> None:
        """Source: drop the new guest (same host), restore the original, start if it ran."""
        ...

    async def resize_live(self, guest: Guest, *, migration: str) -> None:
        """Same host, the guest running: grow it to `guest.flavor` without a reboot (vCPUs
        and memory hot-plugged into its headroom; a grown disk on an overlay of the
        untouched original, marked as `migration`'s, then grown). Nothing is powered off
        and nothing of the original is changed; raises if the guest cannot grow so."""
        ...

    async def revert_live(self, guest: Guest, *, migration: str, timeout: float) -> Reverted:
        """Undo resize_live back to `guest.flavor`: unplugged live where the disk did not
        grow and the guest lets go of what was added; otherwise cold, exactly as Nova's
        revert (powered off, within `timeout` seconds as power_off, `migration`'s overlay
        dropped, the original disk booted on the old flavor). Idempotent; never touches an
        overlay another migration made."""
        ...

    async def release_migration(self, uuid: str, *, migration: str) -> None:
        """Destination: remove the guest built for `migration` (domain and files), and only
        that: a guest here that another migration brought is left alone."""
        ...

    async def destroy(self, uuid: str) -> None:
        """Remove everything this node holds for the instance (guest, disks, revert point).
        Only for an Instance being deleted."""
        ...

    async def quarantine(self, uuid: str) -> list[pathlib.Path]:
        """Stop and undefine the guest and move its files aside (the orphan sweep)."""
        ...

    async def purge_quarantine(self, keep_seconds: float) -> list[str]:
        """Delete what has been in quarantine for `keep_seconds`."""
        ...

    async def get_info(self, uuid: str) -> GuestInfo | None: ...

    async def list_guests(self) -> list[str]:
        """uuids of the instances this node holds files for that carry kubenova's marker."""
        ...

    def owner(self, uuid: str) -> str | None:
        """namespace/name of the Instance a guest here was made for, if recorded."""
        ...

    def disk_path(
        self, uuid: str, *, migration: str, part: Part = Part.DISK
    ) -> pathlib.Path | None:
        """The file the source hands over for `migration`, while it cannot change: the disk
        once the guest is off or writes to this migration's overlay, the overlay once the
        guest is off. None if the driver keeps no files (the fake driver), or none is ready."""
        ...
