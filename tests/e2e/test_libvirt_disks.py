"""The libvirt driver's disks, against the real libvirtd and qemu-img: the same-host
resize makes no copy (an overlay on the renamed original), confirm makes the overlay
standalone without losing data, revert brings back the original byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import subprocess
import uuid as uuids
from collections.abc import Callable, Iterator

import pytest

from kubenova import faults
from kubenova.drivers import base, qcow2
from kubenova.scheduling.amounts import Amount

if os.environ.get("CI"):  # CI installs libvirt-python: a missing one must fail, not skip
    from kubenova.drivers import libvirt as libvirt_driver
else:
    libvirt_driver = pytest.importorskip(
        "kubenova.drivers.libvirt", reason="libvirt-python missing"
    )

TINY, BIGGER = Amount(1, 256, 1), Amount(2, 512, 2)
MARKER = "0x4b"  # byte pattern written to the first 64 KiB of the original disk


def running(vcpus: int, memory_mib: int, disk_gib: int) -> base.GuestInfo:
    """A running guest of these sizes with the driver's default headroom (4x)."""
    return base.GuestInfo(
        base.Power.RUNNING, vcpus, memory_mib, disk_gib, 4 * vcpus, 4 * memory_mib
    )


MIG = str(uuids.uuid4())  # the Migration's uid the driver marks its artefacts with
IMAGE = "blank"  # an image with no disk: a blank disk of the flavor's size


@pytest.fixture
def driver(tmp_path: pathlib.Path) -> libvirt_driver.LibvirtDriver:
    (tmp_path / "images" / IMAGE).mkdir(parents=True)
    d = libvirt_driver.LibvirtDriver(
        uri="qemu:///system",
        instances_path=tmp_path / "inst",
        images_path=tmp_path / "images",
        virt_type="qemu",
    )
    try:
        d.conn.getVersion()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"libvirtd not reachable ({exc}); run hack/install-libvirt.sh")
    return d


def qemu_io(disk: pathlib.Path, command: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", *flags, "-c", command, str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )


def has_marker(disk: pathlib.Path) -> bool:
    # -r -U: read-only and shared, so it works while the guest holds the disk.
    out = qemu_io(disk, f"read -P {MARKER} 0 64k", "-r", "-U")
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def spawned(driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path) -> tuple[str, str]:
    uuid = str(uuids.uuid4())
    asyncio.run(driver.spawn(base.Guest(uuid, TINY, IMAGE, power_on=False)))
    disk = driver.root / uuid / "disk"
    assert qemu_io(disk, f"write -P {MARKER} 0 64k").returncode == 0
    return uuid, IMAGE


def resize(driver: libvirt_driver.LibvirtDriver, uuid: str, image: str, mig: str = MIG) -> None:
    asyncio.run(driver.migrate_disk_and_power_off(uuid, migration=mig, same_host=True, timeout=0.5))
    asyncio.run(
        driver.finish_migration(
            base.Guest(uuid, BIGGER, image, power_on=True), migration=mig, same_host=True
        )
    )


def test_same_host_resize_is_an_overlay_on_the_renamed_original(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    try:
        disk = driver.root / uuid / "disk"
        info = qcow2.info(disk)
        assert info["backing-filename"] == str(driver.root / f"{uuid}_resize" / "disk")
        assert info["virtual-size"] == 2 * 1024**3
        assert has_marker(disk)  # the guest sees the original data through the overlay
        assert asyncio.run(driver.get_info(uuid)) == running(2, 512, 2)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_confirm_makes_the_overlay_standalone_live(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    try:
        asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        disk = driver.root / uuid / "disk"
        assert "backing-filename" not in qcow2.info(disk)
        assert not (driver.root / f"{uuid}_resize").exists()
        info = asyncio.run(driver.get_info(uuid))
        assert info is not None
        assert info.power is base.Power.RUNNING  # confirm never stopped the guest
        asyncio.run(driver.power_off(uuid, 0.5))
        assert has_marker(disk)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_revert_restores_the_original(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    try:
        asyncio.run(
            driver.finish_revert_migration(
                base.Guest(uuid, TINY, image, power_on=False), migration=MIG, same_host=True
            )
        )
        disk = driver.root / uuid / "disk"
        assert "backing-filename" not in qcow2.info(disk)
        assert qcow2.info(disk)["virtual-size"] == 1024**3
        assert has_marker(disk)
        assert asyncio.run(driver.get_info(uuid)) == base.GuestInfo(base.Power.STOPPED, 1, 256, 1)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_shrinking_the_disk_is_refused_before_anything_changes(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid = str(uuids.uuid4())
    asyncio.run(driver.spawn(base.Guest(uuid, BIGGER, IMAGE, power_on=False)))
    try:
        asyncio.run(
            driver.migrate_disk_and_power_off(uuid, migration=MIG, same_host=True, timeout=0.5)
        )
        with pytest.raises(base.DriverError, match="disks never shrink"):
            asyncio.run(
                driver.finish_migration(
                    base.Guest(uuid, TINY, IMAGE, power_on=False), migration=MIG, same_host=True
                )
            )
        assert (driver.root / f"{uuid}_resize" / "disk").exists()  # the original is intact
    finally:
        asyncio.run(driver.destroy(uuid))


@pytest.mark.parametrize(
    ("name", "found"),
    [("cirros", True), ("missing", False), ("../escape", False), ("/etc/passwd", False)],
    ids=["name-in-images-path", "unknown-name", "relative-path", "absolute-path"],
)
def test_spec_image_names_an_image_in_the_images_path(
    tmp_path: pathlib.Path, driver: libvirt_driver.LibvirtDriver, name: str, found: bool
) -> None:
    images = tmp_path / "images"
    (images / "cirros").mkdir(parents=True)
    (tmp_path / "escape").mkdir()  # exists, but only reachable as a path: never used
    named = libvirt_driver.LibvirtDriver(
        uri="qemu:///system", instances_path=driver.root, images_path=images, virt_type="qemu"
    )
    uuid = str(uuids.uuid4())
    try:
        if found:
            asyncio.run(named.spawn(base.Guest(uuid, TINY, name, power_on=False)))
            assert (named.root / uuid / "image").read_text() == name
        else:
            with pytest.raises(base.DriverError, match=r"not an image name|not found on this node"):
                asyncio.run(named.spawn(base.Guest(uuid, TINY, name, power_on=False)))
    finally:
        asyncio.run(named.destroy(uuid))


# --- failure paths: nothing here may cost the current data ----------------------------------


@pytest.fixture
def fault() -> Iterator[Callable[[str], None]]:
    """Arm a fault point in this process (as KUBENOVA_FAULT does in an agent)."""
    yield faults.arm
    faults.arm("")


def test_a_block_pull_that_fails_keeps_the_revert_point_and_a_retry_confirms(
    driver: libvirt_driver.LibvirtDriver,
    tmp_path: pathlib.Path,
    fault: Callable[[str], None],
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)  # the guest runs on the overlay: the pull is live
    disk, aside = driver.root / uuid / "disk", driver.root / f"{uuid}_resize"
    try:
        fault("agent:fail-once:libvirt:block-pull")  # a real job, aborted before it completes
        with pytest.raises(base.DriverError, match="ended without completing"):
            asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert (aside / "disk").exists()  # still the overlay's backing file
        assert qcow2.info(disk)["backing-filename"] == str(aside / "disk")
        asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert "backing-filename" not in qcow2.info(disk)
        assert not aside.exists()
        asyncio.run(driver.power_off(uuid, 0))
        assert has_marker(disk)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_an_offline_flatten_that_fails_keeps_the_revert_point(
    driver: libvirt_driver.LibvirtDriver,
    tmp_path: pathlib.Path,
    fault: Callable[[str], None],
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    asyncio.run(driver.power_off(uuid, 0))  # stopped: the confirm rebases with qemu-img
    try:
        fault("agent:fail-once:libvirt:rebase")
        with pytest.raises(base.DriverError, match="injected failure"):
            asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert (driver.root / f"{uuid}_resize" / "disk").exists()
        asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert has_marker(driver.root / uuid / "disk")
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_stale_revert_point_never_replaces_the_current_disk(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    """A `<uuid>_resize` left by a Migration that was deleted in VERIFY_RESIZE: the current
    disk is an overlay on it. The next resize keeps the current data (made standalone),
    quarantines the stale directory, and a revert of that resize restores current data."""
    uuid, image = spawned(driver, tmp_path)
    stale = str(uuids.uuid4())
    resize(driver, uuid, image, mig=stale)
    asyncio.run(driver.power_off(uuid, 0))
    disk = driver.root / uuid / "disk"
    assert qemu_io(disk, "write -P 0x5c 1M 64k").returncode == 0  # written in VERIFY_RESIZE
    try:
        resize(driver, uuid, image)  # MIG, a new resize on top of the stale state
        aside = driver.root / f"{uuid}_resize"
        assert (aside / ".set-aside-for").read_text() == MIG
        quarantined = list((driver.root / ".quarantine").iterdir())
        assert [p.name.split("-20")[0] for p in quarantined] == [f"{uuid}_resize"]
        asyncio.run(
            driver.finish_revert_migration(
                base.Guest(uuid, BIGGER, image, power_on=False), migration=MIG, same_host=True
            )
        )
        assert "backing-filename" not in qcow2.info(disk)
        out = qemu_io(disk, "read -P 0x5c 1M 64k", "-r", "-U")
        assert "Pattern verification failed" not in out.stdout, out.stdout  # the last write
        assert has_marker(disk)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_destination_never_takes_another_attempts_disk_for_this_one(
    driver: libvirt_driver.LibvirtDriver,
) -> None:
    uuid = str(uuids.uuid4())
    first = asyncio.run(driver.prepare_incoming(uuid, migration=str(uuids.uuid4()), owner="ns/vm"))
    assert first is not None
    first.write_bytes(b"an old attempt's disk")
    try:
        again = asyncio.run(driver.prepare_incoming(uuid, migration=MIG, owner="ns/vm"))
        assert again == first  # a path to receive into: nothing reused
        assert not again.exists()
        moved = list((driver.root / ".quarantine").glob(f"{uuid}-*/{uuid}/disk"))
        assert [p.read_bytes() for p in moved] == [b"an old attempt's disk"]
        again.write_bytes(b"this migration's disk")
        assert asyncio.run(driver.prepare_incoming(uuid, migration=MIG, owner="ns/vm")) is None
    finally:
        asyncio.run(driver.destroy(uuid))


def test_shared_storage_is_detected_and_refused_before_anything_moves(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    """Two nodes with one instancesPath (NFS): the destination sees the source's probe."""
    dest = libvirt_driver.LibvirtDriver(
        uri="qemu:///system",
        instances_path=driver.root,
        images_path=tmp_path / "images",
        virt_type="qemu",
        domain_prefix="other-node",
    )
    uuid, _ = spawned(driver, tmp_path)
    try:
        asyncio.run(
            driver.migrate_disk_and_power_off(uuid, migration=MIG, same_host=False, timeout=0)
        )
        with pytest.raises(base.DriverError, match="shares its instancesPath"):
            asyncio.run(dest.prepare_incoming(uuid, migration=MIG, owner="ns/vm"))
        asyncio.run(dest.release_migration(uuid, migration=MIG))  # the failure's undo
        assert has_marker(driver.root / uuid / "disk")  # the source's disk is untouched
        asyncio.run(
            driver.finish_revert_migration(
                base.Guest(uuid, TINY, IMAGE, power_on=False), migration=MIG, same_host=False
            )
        )
        assert asyncio.run(driver.get_info(uuid)) == base.GuestInfo(base.Power.STOPPED, 1, 256, 1)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_node_that_received_the_guest_once_can_be_the_source_of_the_next_move(
    driver: libvirt_driver.LibvirtDriver,
) -> None:
    """Moved here by one migration (its `.received-for`), away by the next: confirming the
    next one removes the copy here (found by the README walkthrough: a-> b, then b -> a)."""
    uuid = str(uuids.uuid4())
    first, second = str(uuids.uuid4()), str(uuids.uuid4())
    incoming = asyncio.run(driver.prepare_incoming(uuid, migration=first, owner="ns/vm"))
    assert incoming is not None
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(incoming), "1G"], check=True)
    asyncio.run(
        driver.finish_migration(
            base.Guest(uuid, TINY, IMAGE, power_on=False), migration=first, same_host=False
        )
    )
    asyncio.run(
        driver.migrate_disk_and_power_off(uuid, migration=second, same_host=False, timeout=0)
    )
    asyncio.run(driver.confirm_migration(uuid, migration=second, same_host=False))
    assert not (driver.root / uuid).exists()
    assert asyncio.run(driver.get_info(uuid)) is None


# --- live resize: the original under the overlay ---------------------------------------------


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def live_resized(driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path) -> str:
    """A running guest whose disk carries the marker, grown live to BIGGER."""
    uuid, image = spawned(driver, tmp_path)
    asyncio.run(driver.power_on(uuid))
    asyncio.run(driver.resize_live(base.Guest(uuid, BIGGER, image, power_on=True), migration=MIG))
    return uuid


def source_of(uuid: str, *, inactive: bool = False) -> str:
    flags = ["--inactive"] if inactive else []
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "domblklist", *flags, uuid],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.strip().startswith("vda"))


def test_a_live_resize_never_writes_the_original_and_its_revert_drops_only_the_overlay(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    disk = driver.root / uuid / "disk"
    before = sha256(disk)
    asyncio.run(driver.power_on(uuid))
    guest = base.Guest(uuid, BIGGER, image, power_on=True)
    try:
        asyncio.run(driver.resize_live(guest, migration=MIG))
        live = driver.root / uuid / "disk.live"
        assert source_of(uuid) == str(live)
        assert source_of(uuid, inactive=True) == str(live)  # a restart boots the overlay
        assert qcow2.info(live)["backing-filename"] == str(disk)
        assert qcow2.info(live)["virtual-size"] == 2 * 1024**3
        assert sha256(disk) == before  # the original, byte for byte
        reverted = asyncio.run(
            driver.revert_live(
                base.Guest(uuid, TINY, image, power_on=True), migration=MIG, timeout=3
            )
        )
        assert not reverted.live
        assert not live.exists()
        assert source_of(uuid) == str(disk)
        assert sha256(disk) == before
        assert asyncio.run(driver.get_info(uuid)) == running(1, 256, 1)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_live_commit_that_fails_keeps_the_overlay_and_a_retry_confirms(
    driver: libvirt_driver.LibvirtDriver,
    tmp_path: pathlib.Path,
    fault: Callable[[str], None],
) -> None:
    uuid = live_resized(driver, tmp_path)
    disk, live = driver.root / uuid / "disk", driver.root / uuid / "disk.live"
    try:
        fault("agent:fail-once:libvirt:block-commit")  # a real job, aborted before it completes
        with pytest.raises(base.DriverError, match="ended without completing"):
            asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert live.exists()  # still the disk the guest runs on
        assert source_of(uuid) == str(live)
        # The commit may have written part of the overlay into `disk`: a revert now would
        # boot a half-written original, so it is refused and the guest runs on untouched.
        old = base.Guest(uuid, TINY, IMAGE, power_on=True)
        with pytest.raises(base.DriverError, match="can only be confirmed"):
            asyncio.run(driver.revert_live(old, migration=MIG, timeout=3))
        assert source_of(uuid) == str(live)
        assert asyncio.run(driver.get_info(uuid)).power is base.Power.RUNNING  # type: ignore[union-attr]
        asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert not live.exists()
        assert (source_of(uuid), source_of(uuid, inactive=True)) == (str(disk), str(disk))
        assert qcow2.info(disk)["virtual-size"] == 2 * 1024**3  # the base grew with the commit
        info = asyncio.run(driver.get_info(uuid))
        assert info is not None
        assert (info.power, info.vcpus, info.memory_mib, info.disk_gib) == (
            base.Power.RUNNING,
            2,
            512,
            2,
        )
        asyncio.run(driver.power_off(uuid, 0))
        assert has_marker(disk)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_live_resize_confirmed_while_the_guest_is_off_commits_with_qemu_img(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid = live_resized(driver, tmp_path)
    disk, live = driver.root / uuid / "disk", driver.root / uuid / "disk.live"
    try:
        asyncio.run(driver.power_off(uuid, 0))
        asyncio.run(driver.confirm_migration(uuid, migration=MIG, same_host=True))
        assert not live.exists()
        assert source_of(uuid, inactive=True) == str(disk)
        assert "backing-filename" not in qcow2.info(disk)
        assert qcow2.info(disk)["virtual-size"] == 2 * 1024**3
        assert has_marker(disk)
        asyncio.run(driver.power_on(uuid))  # boots the new flavor on the committed disk
        assert asyncio.run(driver.get_info(uuid)) == running(2, 512, 2)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_stale_overlay_file_is_moved_aside_never_taken_or_deleted(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    """A `disk.live` no definition uses (an attempt that died before its snapshot) is not
    this resize's overlay: it goes to quarantine, whole, and a fresh overlay is made."""
    uuid, image = spawned(driver, tmp_path)
    disk = driver.root / uuid / "disk"
    stale = driver.root / uuid / "disk.live"
    qcow2.create(stale, 1)
    stale_sum = sha256(stale)
    asyncio.run(driver.power_on(uuid))
    try:
        asyncio.run(
            driver.resize_live(base.Guest(uuid, BIGGER, image, power_on=True), migration=MIG)
        )
        assert source_of(uuid) == str(stale)  # the path of the new overlay, on `disk`
        assert qcow2.info(stale)["backing-filename"] == str(disk)
        kept = list((driver.root / ".quarantine").glob(f"{uuid}-disk.live-*/disk.live"))
        assert [sha256(k) for k in kept] == [stale_sum]
    finally:
        asyncio.run(driver.destroy(uuid))


# --- cross-node pre-copy: the base frozen under a delta ----------------------------------------

WRITTEN = "0x5c"  # what the guest writes at 1 MiB after its base froze


def test_a_pre_copy_sends_a_frozen_base_then_the_delta_and_the_destination_assembles_them(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    disk, delta = driver.root / uuid / "disk", driver.root / uuid / "disk.delta"
    dest = libvirt_driver.LibvirtDriver(
        uri="qemu:///system",
        instances_path=tmp_path / "dest",
        images_path=tmp_path / "images",
        virt_type="qemu",
        domain_prefix="dest",
    )
    asyncio.run(driver.power_on(uuid))
    try:
        assert driver.disk_path(uuid, migration=MIG) is None  # the guest writes it: not served
        before = sha256(disk)
        for _ in range(2):  # idempotent
            assert asyncio.run(driver.freeze_base(uuid, migration=MIG)) is True
        assert source_of(uuid) == source_of(uuid, inactive=True) == str(delta)
        assert driver.disk_path(uuid, migration=MIG) == disk  # frozen: served while it runs
        assert driver.disk_path(uuid, migration=MIG, part=base.Part.DELTA) is None  # written
        asyncio.run(
            driver.migrate_disk_and_power_off(uuid, migration=MIG, same_host=False, timeout=0)
        )
        assert qemu_io(delta, f"write -P {WRITTEN} 1M 64k").returncode == 0  # the guest's writes
        assert sha256(disk) == before  # the base, byte for byte, whatever the guest wrote
        assert driver.disk_path(uuid, migration=MIG, part=base.Part.DELTA) == delta

        # The destination: the base, then the delta (as the transfer writes them), assembled.
        for part, source in ((base.Part.DISK, disk), (base.Part.DELTA, delta)):
            where = asyncio.run(
                dest.prepare_incoming(uuid, migration=MIG, owner="ns/vm", part=part)
            )
            assert where is not None
            where.write_bytes(source.read_bytes())
        guest = base.Guest(uuid, TINY, image, power_on=False)
        for _ in range(2):
            asyncio.run(dest.finish_migration(guest, migration=MIG, same_host=False))
        assembled = dest.root / uuid / "disk"
        assert qcow2.backing_of(assembled) is None
        assert not (dest.root / uuid / "disk.delta").exists()
        assert has_marker(assembled)
        assert "verification failed" not in qemu_io(assembled, f"read -P {WRITTEN} 1M 64k").stdout
        again = dest.prepare_incoming(uuid, migration=MIG, owner="ns/vm", part=base.Part.DELTA)
        assert asyncio.run(again) is None  # assembled once: never again (it may run by now)

        # A revert on the source: the original back as one disk, with what it wrote.
        for _ in range(2):
            asyncio.run(
                driver.finish_revert_migration(
                    base.Guest(uuid, TINY, image, power_on=True), migration=MIG, same_host=False
                )
            )
        assert not delta.exists()
        assert qcow2.backing_of(disk) is None
        assert source_of(uuid) == source_of(uuid, inactive=True) == str(disk)
        assert has_marker(disk)
        assert (
            "verification failed"
            not in qemu_io(disk, f"read -P {WRITTEN} 1M 64k", "-r", "-U").stdout
        )
        assert asyncio.run(driver.get_info(uuid)) == running(1, 256, 1)
    finally:
        asyncio.run(dest.destroy(uuid))
        asyncio.run(driver.destroy(uuid))


def test_a_pre_copy_that_fails_before_the_power_off_thaws_the_running_guest_live(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    delta = driver.root / uuid / "disk.delta"
    asyncio.run(driver.power_on(uuid))
    try:
        asyncio.run(driver.freeze_base(uuid, migration=MIG))
        domain_id = subprocess.run(
            ["virsh", "-c", "qemu:///system", "domid", uuid],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        guest = base.Guest(uuid, TINY, image, power_on=True)
        asyncio.run(driver.finish_revert_migration(guest, migration=MIG, same_host=False))
        assert not delta.exists()
        assert source_of(uuid) == source_of(uuid, inactive=True) == str(driver.root / uuid / "disk")
        after = subprocess.run(
            ["virsh", "-c", "qemu:///system", "domid", uuid],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert after == domain_id  # the same QEMU process: never powered off
        assert has_marker(driver.root / uuid / "disk")
    finally:
        asyncio.run(driver.destroy(uuid))


def test_a_delta_no_definition_uses_is_quarantined_never_committed(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    disk, stale = driver.root / uuid / "disk", driver.root / uuid / "disk.delta"
    qcow2.overlay(disk, stale)
    assert qemu_io(stale, f"write -P {WRITTEN} 0 64k").returncode == 0  # would hide the marker
    before, stale_sum = sha256(disk), sha256(stale)
    try:
        guest = base.Guest(uuid, TINY, image, power_on=False)
        asyncio.run(driver.finish_revert_migration(guest, migration=MIG, same_host=False))
        assert sha256(disk) == before
        assert has_marker(disk)
        kept = list((driver.root / ".quarantine").glob(f"{uuid}-disk.delta-*/disk.delta"))
        assert [sha256(k) for k in kept] == [stale_sum]
    finally:
        asyncio.run(driver.destroy(uuid))


def test_another_attempts_delta_is_made_whole_before_the_disk_is_handed_over(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    """A delta an earlier move left in use (its undo never finished) holds what the guest
    wrote: the next set-aside commits it into `disk` before it serves or moves anything."""
    uuid, _ = spawned(driver, tmp_path)
    disk, delta = driver.root / uuid / "disk", driver.root / uuid / "disk.delta"
    earlier = str(uuids.uuid4())
    asyncio.run(driver.power_on(uuid))
    try:
        asyncio.run(driver.freeze_base(uuid, migration=earlier))
        asyncio.run(driver.power_off(uuid, 0))
        assert qemu_io(delta, f"write -P {WRITTEN} 1M 64k").returncode == 0
        driver.files.probe(uuid, MIG).touch()  # as if this move's hand-off had begun
        assert driver.disk_path(uuid, migration=MIG) is None  # `disk` alone is not the disk
        asyncio.run(
            driver.migrate_disk_and_power_off(uuid, migration=MIG, same_host=False, timeout=0)
        )
        assert not delta.exists()
        assert driver.disk_path(uuid, migration=MIG) == disk
        assert "verification failed" not in qemu_io(disk, f"read -P {WRITTEN} 1M 64k").stdout
        assert has_marker(disk)
    finally:
        asyncio.run(driver.destroy(uuid))
