"""An instance's files on a node, and the markers that tie each artefact to its owner.

    <root>/<uuid>/                        the instance directory (disk, image name, markers)
    <root>/<uuid>/.kubenova-instance      namespace/name of the Instance (written at spawn)
    <root>/<uuid>/.received-for           uid of the Migration whose transfer brought the disk
    <root>/<uuid>/.source-<migration uid> written by a migration's source before the hand-off;
                                          a destination that sees it shares the source's storage
    <root>/<uuid>/disk.live               a live resize's overlay on the untouched `disk`
                                          (the guest runs on it until confirm or revert)
    <root>/<uuid>/.live-for               uid of the Migration whose live resize made it
    <root>/<uuid>/.committing-for         its confirm began writing the overlay into `disk`:
                                          the original is no longer whole (no revert now)
    <root>/<uuid>/disk.delta              a pre-copy's overlay on the frozen `disk` (source), or
                                          the same overlay received (destination, until assembled)
    <root>/<uuid>/.delta-for              uid of the Migration whose pre-copy froze `disk` (source)
    <root>/<uuid>/.assembled-for          the destination committed that migration's delta into
                                          the disk it received (never assembled twice)
    <root>/<uuid>_resize/                 the revert point of a same-host resize
    <root>/<uuid>_resize/.set-aside-for   uid of the Migration that set it aside
    <root>/.quarantine/<uuid>-<stamp>/    what an orphan sweep took away, kept for a while
    <root>/console/<uuid>.log             the serial console, across resizes

Invariant: an artefact without the marker of the migration at hand is never taken as that
migration's work done, and a directory without `.kubenova-instance` is never a sweep's
candidate. Only UUID-shaped names are joined into paths (status.uuid comes from the API).
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
import re
import shutil

from kubenova.drivers import base

log = logging.getLogger(__name__)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
OWNER = ".kubenova-instance"
RECEIVED_FOR = ".received-for"
SET_ASIDE_FOR = ".set-aside-for"
LIVE_FOR = ".live-for"
COMMITTING_FOR = ".committing-for"
DELTA_FOR = ".delta-for"
ASSEMBLED_FOR = ".assembled-for"
SOURCE_PROBE = ".source-"
QUARANTINE = ".quarantine"
RESIZE_SUFFIX = "_resize"
STAMP = "%Y%m%dT%H%M%SZ"


def checked(uuid: str) -> str:
    """`uuid`, if it is one: anything else (`..`, a path) never reaches the filesystem."""
    if not UUID.match(uuid):
        raise base.DriverError(f"refusing instance uuid {uuid!r}: not a lowercase UUID")
    return uuid


def write_marker(path: pathlib.Path, value: str) -> None:
    """Atomically: a crash leaves the old marker or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_marker(path: pathlib.Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


class Layout:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def dir(self, uuid: str) -> pathlib.Path:
        return self.root / checked(uuid)

    def aside(self, uuid: str) -> pathlib.Path:
        return self.root / f"{checked(uuid)}{RESIZE_SUFFIX}"

    def console(self, uuid: str) -> pathlib.Path:
        return self.root / "console" / f"{checked(uuid)}.log"

    # --- markers ---------------------------------------------------------------------------

    def set_owner(self, uuid: str, name: str) -> None:
        d = self.dir(uuid)
        d.mkdir(parents=True, exist_ok=True)
        if read_marker(d / OWNER) != name:
            write_marker(d / OWNER, name)

    def owner(self, uuid: str) -> str | None:
        """namespace/name of the Instance these files belong to, from either directory."""
        for d in (self.dir(uuid), self.aside(uuid)):
            found = read_marker(d / OWNER)
            if found is not None:
                return found
        return None

    def set_aside_for(self, uuid: str) -> str | None:
        return read_marker(self.aside(uuid) / SET_ASIDE_FOR)

    def live_for(self, uuid: str) -> str | None:
        return read_marker(self.dir(uuid) / LIVE_FOR)

    def committing_for(self, uuid: str) -> str | None:
        return read_marker(self.dir(uuid) / COMMITTING_FOR)

    def delta_for(self, uuid: str) -> str | None:
        return read_marker(self.dir(uuid) / DELTA_FOR)

    def assembled_for(self, uuid: str) -> str | None:
        return read_marker(self.dir(uuid) / ASSEMBLED_FOR)

    def received_for(self, uuid: str) -> str | None:
        return read_marker(self.dir(uuid) / RECEIVED_FOR)

    def probe(self, uuid: str, migration: str) -> pathlib.Path:
        return self.dir(uuid) / f"{SOURCE_PROBE}{migration}"

    def incoming(
        self, uuid: str, *, migration: str, owner: str, disk: str, now: datetime.datetime
    ) -> pathlib.Path | None:
        """Destination of a move: where the disk named `disk` for `migration` is written, or
        None once it has arrived. Refuses when the source's probe is visible here (shared
        storage: receiving would overwrite the original, confirm would delete the guest's
        only disk); another attempt's leftovers are quarantined, never received into."""
        d = self.dir(uuid)
        if self.probe(uuid, migration).exists():
            raise base.DriverError(
                f"the source's instance directory is visible here ({d}): this node shares "
                "its instancesPath with the source, and moves across shared storage are "
                "not supported"
            )
        if self.received_for(uuid) == migration:
            return None if (d / disk).exists() else d / disk
        if d.exists():
            where = self.quarantine(uuid, now)
            log.warning("leftovers of another attempt for %s moved to %s", uuid, where)
        d.mkdir(parents=True)
        self.set_owner(uuid, owner)
        write_marker(d / RECEIVED_FOR, migration)
        return d / disk

    # --- the sweep's side ------------------------------------------------------------------

    def instances(self) -> list[str]:
        """uuids with files here that carry kubenova's marker (the sweep's candidates)."""
        found = set()
        for p in self.root.iterdir() if self.root.exists() else ():
            uuid = p.name.removesuffix(RESIZE_SUFFIX)
            if p.is_dir() and UUID.match(uuid) and (p / OWNER).exists():
                found.add(uuid)
        return sorted(found)

    def quarantine(self, uuid: str, now: datetime.datetime) -> list[pathlib.Path]:
        """Move everything held for `uuid` into the quarantine; returns where it went."""
        where = self.quarantine_dir(checked(uuid), now)
        moved = []
        for src in (self.dir(uuid), self.aside(uuid), self.console(uuid)):
            if src.exists():
                where.mkdir(parents=True, exist_ok=True)
                dst = where / src.name
                src.rename(dst)  # same filesystem: constant time, nothing copied
                moved.append(dst)
        return moved

    def quarantine_dir(self, name: str, now: datetime.datetime) -> pathlib.Path:
        """Where something named `name` goes into quarantine at `now` (purged by its stamp)."""
        return self.root / QUARANTINE / f"{name}-{now.strftime(STAMP)}"

    def purge_quarantine(self, now: datetime.datetime, keep_seconds: float) -> list[str]:
        """Delete quarantined entries older than `keep_seconds`; returns their names."""
        purged = []
        base_dir = self.root / QUARANTINE
        for entry in sorted(base_dir.iterdir()) if base_dir.exists() else ():
            try:
                stamp = datetime.datetime.strptime(entry.name[-len("YYYYmmddTHHMMSSZ") :], STAMP)
            except ValueError:
                continue  # not ours: left alone
            age = (now - stamp.replace(tzinfo=datetime.UTC)).total_seconds()
            if age >= keep_seconds:
                shutil.rmtree(entry)
                purged.append(entry.name)
        return purged
