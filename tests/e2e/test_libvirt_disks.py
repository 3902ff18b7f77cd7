"""The libvirt driver's disks, against the real libvirtd and qemu-img: the same-host
resize makes no copy (an overlay on the renamed original), confirm makes the overlay
standalone without losing data, revert brings back the original byte for byte."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import uuid as uuids

import pytest

from kubenova.drivers import base
from kubenova.scheduling.amounts import Amount

if os.environ.get("CI"):  # CI installs libvirt-python: a missing one must fail, not skip
    from kubenova.drivers import libvirt as libvirt_driver
else:
    libvirt_driver = pytest.importorskip(
        "kubenova.drivers.libvirt", reason="libvirt-python missing"
    )

TINY, BIGGER = Amount(1, 256, 1), Amount(2, 512, 2)
MARKER = "0x4b"  # byte pattern written to the first 64 KiB of the original disk


@pytest.fixture
def driver(tmp_path: pathlib.Path) -> libvirt_driver.LibvirtDriver:
    d = libvirt_driver.LibvirtDriver(
        uri="qemu:///system", instances_path=tmp_path / "inst", virt_type="qemu"
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


def spawned(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> tuple[str, pathlib.Path]:
    image = tmp_path / "image"
    image.mkdir()
    uuid = str(uuids.uuid4())
    asyncio.run(driver.spawn(base.Guest(uuid, TINY, str(image), power_on=False)))
    disk = driver.root / uuid / "disk"
    assert qemu_io(disk, f"write -P {MARKER} 0 64k").returncode == 0
    return uuid, image


def resize(driver: libvirt_driver.LibvirtDriver, uuid: str, image: pathlib.Path) -> None:
    asyncio.run(driver.migrate_disk_and_power_off(uuid, same_host=True, timeout=0.5))
    asyncio.run(
        driver.finish_migration(base.Guest(uuid, BIGGER, str(image), power_on=True), same_host=True)
    )


def test_same_host_resize_is_an_overlay_on_the_renamed_original(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    try:
        disk = driver.root / uuid / "disk"
        info = libvirt_driver.disk_info(disk)
        assert info["backing-filename"] == str(driver.root / f"{uuid}_resize" / "disk")
        assert info["virtual-size"] == 2 * 1024**3
        assert has_marker(disk)  # the guest sees the original data through the overlay
        assert asyncio.run(driver.get_info(uuid)) == base.GuestInfo(base.Power.RUNNING, 2, 512, 2)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_confirm_makes_the_overlay_standalone_live(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    uuid, image = spawned(driver, tmp_path)
    resize(driver, uuid, image)
    try:
        asyncio.run(driver.confirm_migration(uuid, same_host=True))
        disk = driver.root / uuid / "disk"
        assert "backing-filename" not in libvirt_driver.disk_info(disk)
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
                base.Guest(uuid, TINY, str(image), power_on=False), same_host=True
            )
        )
        disk = driver.root / uuid / "disk"
        assert "backing-filename" not in libvirt_driver.disk_info(disk)
        assert libvirt_driver.disk_info(disk)["virtual-size"] == 1024**3
        assert has_marker(disk)
        assert asyncio.run(driver.get_info(uuid)) == base.GuestInfo(base.Power.STOPPED, 1, 256, 1)
    finally:
        asyncio.run(driver.destroy(uuid))


def test_shrinking_the_disk_is_refused_before_anything_changes(
    driver: libvirt_driver.LibvirtDriver, tmp_path: pathlib.Path
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    uuid = str(uuids.uuid4())
    asyncio.run(driver.spawn(base.Guest(uuid, BIGGER, str(image), power_on=False)))
    try:
        asyncio.run(driver.migrate_disk_and_power_off(uuid, same_host=True, timeout=0.5))
        with pytest.raises(base.DriverError, match="disks never shrink"):
            asyncio.run(
                driver.finish_migration(
                    base.Guest(uuid, TINY, str(image), power_on=False), same_host=True
                )
            )
        assert (driver.root / f"{uuid}_resize" / "disk").exists()  # the original is intact
    finally:
        asyncio.run(driver.destroy(uuid))


@pytest.mark.parametrize(
    ("name", "found"),
    [("cirros", True), ("missing", False), ("../escape", False)],
    ids=["name-in-images-path", "unknown-name", "relative-path-is-not-a-name"],
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
            with pytest.raises(base.DriverError, match=f"image {name} not found on this node"):
                asyncio.run(named.spawn(base.Guest(uuid, TINY, name, power_on=False)))
    finally:
        asyncio.run(named.destroy(uuid))
