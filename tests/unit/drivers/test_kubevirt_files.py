"""The KubeVirt driver's steps that touch no API (drivers/kubevirt.py): the revert point is
a rename that survives a crash at any point, a cut-short copy is never taken for the disk,
another migration's revert point is never touched, confirm drops it only once a new disk
stands; a live resize is refused. Real files, real qemu-img."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import uuid as uuids
from collections.abc import Iterator

import pytest
from kubernetes_asyncio import client

from kubenova.drivers import base, kubevirt, layout
from kubenova.scheduling.amounts import Amount

UUID = str(uuids.uuid4())
MIG, OTHER = str(uuids.uuid4()), str(uuids.uuid4())


@pytest.fixture
def driver(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[kubevirt.KubeVirtDriver]:
    # No chown to the launcher's uid 107: the files are this test's.
    monkeypatch.setattr(kubevirt.KubeVirtDriver, "_owned", lambda *_: None)

    async def make() -> tuple[client.ApiClient, kubevirt.KubeVirtDriver]:
        api = client.ApiClient(client.Configuration())
        files = tmp_path / "instances"
        made = kubevirt.KubeVirtDriver(
            api, node="n1", instances_path=files, images_path=tmp_path / "images"
        )
        return api, made

    api, made = asyncio.run(make())
    d = made.files.dir(UUID)
    d.mkdir(parents=True)
    made.files.set_owner(UUID, "ns/vm")
    disk = d / kubevirt.DISK
    with disk.open("wb") as f:
        f.write(b"KUBENOVA-MARKER-original\n")
        f.truncate(64 * 1024**2)
    yield made
    asyncio.run(api.close())


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_set_aside_keeps_the_original_and_copies_it(driver: kubevirt.KubeVirtDriver) -> None:
    original = sha(driver.files.dir(UUID) / kubevirt.DISK)
    driver._set_aside(UUID, MIG)
    driver._set_aside(UUID, MIG)  # again, as after a crash once it was done: nothing changes
    assert sha(driver.files.aside(UUID) / kubevirt.DISK) == original
    assert sha(driver.files.dir(UUID) / kubevirt.DISK) == original
    assert driver.files.set_aside_for(UUID) == MIG
    assert driver.files.owner(UUID) == "ns/vm"


def test_a_crash_after_the_rename_resumes_with_the_copy(driver: kubevirt.KubeVirtDriver) -> None:
    original = sha(driver.files.dir(UUID) / kubevirt.DISK)
    d = driver.files.dir(UUID)
    layout.write_marker(d / layout.SET_ASIDE_FOR, MIG)
    d.rename(driver.files.aside(UUID))  # the crash: renamed, no new disk yet
    part = driver.root / f"{UUID}.part"
    part.mkdir()
    (part / kubevirt.DISK).write_bytes(b"half a copy")  # and a copy cut short
    driver._set_aside(UUID, MIG)
    assert sha(driver.files.dir(UUID) / kubevirt.DISK) == original
    assert sha(driver.files.aside(UUID) / kubevirt.DISK) == original
    assert not part.exists()


def test_another_migrations_revert_point_is_quarantined_whole(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    """A stale `<uuid>_resize` (its Migration deleted): `<uuid>` holds the current data,
    so that is what this resize sets aside; the stale one is kept whole in quarantine."""
    driver._set_aside(UUID, OTHER)
    stale = sha(driver.files.aside(UUID) / kubevirt.DISK)
    with (driver.files.dir(UUID) / kubevirt.DISK).open("r+b") as f:
        f.write(b"KUBENOVA-MARKER-current")
    current = sha(driver.files.dir(UUID) / kubevirt.DISK)
    driver._set_aside(UUID, MIG)
    assert driver.files.set_aside_for(UUID) == MIG
    assert sha(driver.files.aside(UUID) / kubevirt.DISK) == current
    assert sha(driver.files.dir(UUID) / kubevirt.DISK) == current
    kept = [p for p in driver.root.rglob(kubevirt.DISK) if "quarantine" in str(p)]
    assert [sha(p) for p in kept] == [stale]


def test_a_stale_revert_point_without_a_current_disk_is_refused_untouched(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    driver._set_aside(UUID, OTHER)
    kept = sha(driver.files.aside(UUID) / kubevirt.DISK)
    (driver.files.dir(UUID) / kubevirt.DISK).unlink()
    with pytest.raises(base.DriverError, match="refusing to guess"):
        driver._set_aside(UUID, MIG)
    assert sha(driver.files.aside(UUID) / kubevirt.DISK) == kept
    assert driver.files.set_aside_for(UUID) == OTHER


def test_restore_brings_the_original_back_and_keeps_the_copy_in_quarantine(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    original = sha(driver.files.dir(UUID) / kubevirt.DISK)
    driver._set_aside(UUID, MIG)
    with (driver.files.dir(UUID) / kubevirt.DISK).open("r+b") as f:
        f.write(b"KUBENOVA-MARKER-written-after-resize")
    driver._restore(UUID)
    assert sha(driver.files.dir(UUID) / kubevirt.DISK) == original
    assert not driver.files.aside(UUID).exists()
    assert driver.files.set_aside_for(UUID) is None
    [kept] = (driver.root / layout.QUARANTINE).iterdir()
    assert (kept / kubevirt.DISK).read_bytes().startswith(b"KUBENOVA-MARKER-written")


def test_a_disk_never_shrinks(driver: kubevirt.KubeVirtDriver) -> None:
    disk = driver.files.dir(UUID) / kubevirt.DISK
    driver._grow(disk, 1)
    assert disk.stat().st_size == 1024**3
    with pytest.raises(base.DriverError, match="never shrink"):
        driver._grow(disk, 0)
    assert disk.stat().st_size == 1024**3


def confirm(driver: kubevirt.KubeVirtDriver, mig: str) -> None:
    asyncio.run(driver.confirm_migration(UUID, migration=mig, same_host=True))


def test_confirm_drops_only_its_own_revert_point_and_only_with_a_new_disk(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    driver._set_aside(UUID, MIG)
    kept = sha(driver.files.aside(UUID) / kubevirt.DISK)
    with pytest.raises(base.DriverError, match="not this migration's"):
        confirm(driver, OTHER)  # a stale confirm of another migration
    (driver.files.dir(UUID) / kubevirt.DISK).unlink()  # the new disk lost
    with pytest.raises(base.DriverError, match="the revert point is kept"):
        confirm(driver, MIG)
    assert sha(driver.files.aside(UUID) / kubevirt.DISK) == kept
    (driver.files.dir(UUID) / kubevirt.DISK).write_bytes(b"a new disk")
    confirm(driver, MIG)
    confirm(driver, MIG)  # idempotent
    assert not driver.files.aside(UUID).exists()
    assert (driver.files.dir(UUID) / kubevirt.DISK).exists()


def test_a_live_resize_is_refused_with_the_reason(driver: kubevirt.KubeVirtDriver) -> None:
    guest = base.Guest(uuid=UUID, flavor=Amount(2, 512, 2), image="cirros", power_on=True)
    with pytest.raises(base.DriverError, match="resizes cold"):
        asyncio.run(driver.resize_live(guest, migration=MIG))


# --- a move between nodes: the destination's side, and what the source serves -----------------


def test_the_source_serves_its_disk_only_once_the_hand_off_began(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    assert driver.disk_path(UUID, migration=MIG) is None  # the guest may still run on it
    driver.files.probe(UUID, MIG).touch()  # written after the guest stopped
    assert driver.disk_path(UUID, migration=MIG) == driver.files.dir(UUID) / kubevirt.DISK
    assert driver.disk_path(UUID, migration=OTHER) is None  # another migration's is not
    assert driver.disk_path(UUID, migration=MIG, part=base.Part.DELTA) is None  # no pre-copy


def test_a_destination_that_sees_the_sources_probe_refuses_and_touches_nothing(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    """Shared storage: the source's directory is this node's too. Receiving into it would
    overwrite the original, confirm would delete the guest's only disk."""
    driver.files.probe(UUID, MIG).touch()
    original = sha(driver.files.dir(UUID) / kubevirt.DISK)
    with pytest.raises(base.DriverError, match="shares its instancesPath"):
        driver._prepare_incoming(UUID, MIG, "ns/vm", base.Part.DISK)
    assert sha(driver.files.dir(UUID) / kubevirt.DISK) == original


def test_leftovers_of_another_attempt_are_quarantined_never_received_into(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    leftover = sha(driver.files.dir(UUID) / kubevirt.DISK)
    target = driver._prepare_incoming(UUID, MIG, "ns/vm", base.Part.DISK)
    assert target == driver.files.dir(UUID) / kubevirt.DISK
    assert not target.exists()
    assert driver.files.received_for(UUID) == MIG
    kept = [p for p in driver.root.rglob(kubevirt.DISK) if p != target]
    assert [sha(p) for p in kept] == [leftover]  # moved aside whole, not deleted
    # Again, as after a crash: the same place, and nothing once the disk has arrived.
    assert driver._prepare_incoming(UUID, MIG, "ns/vm", base.Part.DISK) == target
    target.write_bytes(b"received")
    assert driver._prepare_incoming(UUID, MIG, "ns/vm", base.Part.DISK) is None


def test_a_pre_copy_delta_is_refused(driver: kubevirt.KubeVirtDriver) -> None:
    with pytest.raises(base.DriverError, match="resizes cold"):
        driver._prepare_incoming(UUID, MIG, "ns/vm", base.Part.DELTA)


def test_a_source_confirm_on_shared_storage_deletes_nothing(
    driver: kubevirt.KubeVirtDriver,
) -> None:
    """The destination marked the source's own directory as received: storage is shared,
    and the directory is the guest that now runs there. Confirm refuses and keeps it."""
    disk = driver.files.dir(UUID) / kubevirt.DISK
    kept = sha(disk)
    layout.write_marker(driver.files.dir(UUID) / layout.RECEIVED_FOR, MIG)
    with pytest.raises(base.DriverError, match="a destination's copy too"):
        asyncio.run(driver.confirm_migration(UUID, migration=MIG, same_host=False))
    assert sha(disk) == kept
