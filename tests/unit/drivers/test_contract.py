"""The driver contract: every driver (fake, libvirt against the real libvirtd) passes these.

Each test runs one of Nova's flows through the Driver protocol and checks what the
hypervisor then reports, including that every step is idempotent (run twice = once)
and that the original survives until confirm.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import uuid as uuids
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from kubenova.drivers import base, fake
from kubenova.scheduling.amounts import Amount

TINY = Amount(1, 256, 1)
BIGGER = Amount(2, 512, 2)
UUID = ""  # set per test: libvirtd is shared by parallel test workers
TIMEOUT = 0.5  # graceful shutdown wait: a guest without an OS ignores ACPI anyway


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _libvirt(tmp: pathlib.Path) -> base.Driver:
    try:
        from kubenova.drivers import libvirt  # noqa: PLC0415 - needs libvirt-python

        driver = libvirt.LibvirtDriver(
            uri="qemu:///system", instances_path=tmp / "instances", virt_type="qemu"
        )
        driver.conn.getVersion()
    except Exception as exc:
        if os.environ.get("CI"):
            raise  # CI installs and starts libvirtd (hack/install-libvirt.sh): never skip there
        pytest.skip(
            f"libvirtd not reachable on qemu:///system ({exc}); run hack/install-libvirt.sh"
        )
    return driver


DriverFactory = Callable[[pathlib.Path], base.Driver]
DRIVERS: dict[str, DriverFactory] = {
    "fake": lambda tmp: fake.FakeDriver(Amount(4, 4096, 40), state_file=tmp / "state.json"),
    "libvirt": _libvirt,
}
IMAGE = ""


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[base.Driver]:
    global UUID, IMAGE  # noqa: PLW0603 - per-test values the helpers below read
    UUID = str(uuids.uuid4())
    image = tmp_path / "image"  # an empty image: a blank disk of the flavor's size, no OS
    image.mkdir()
    IMAGE = str(image)
    d = DRIVERS[request.param](tmp_path)
    yield d
    run(d.destroy(UUID))


def guest(flavor: Amount = TINY, power_on: bool = True) -> base.Guest:
    return base.Guest(uuid=UUID, flavor=flavor, image=IMAGE, power_on=power_on)


def info(driver: base.Driver) -> base.GuestInfo | None:
    return run(driver.get_info(UUID))  # type: ignore[no-any-return]


def test_spawn_is_idempotent(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.spawn(guest()))
    assert info(driver) == base.GuestInfo(base.Power.RUNNING, 1, 256, 1)
    assert run(driver.list_guests()) == [UUID]


def test_power_off_and_on(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.power_off(UUID, timeout=TIMEOUT))
    assert (i := info(driver)) is not None
    assert i.power is base.Power.STOPPED
    run(driver.power_on(UUID))
    assert (i := info(driver)) is not None
    assert i.power is base.Power.RUNNING


@pytest.mark.parametrize("same_host", [True, False], ids=["same-host", "cross-host-source"])
def test_resize_then_confirm(driver: base.Driver, same_host: bool) -> None:
    run(driver.spawn(guest()))
    for _ in range(2):  # every step twice: a crash-and-retry must be harmless
        run(driver.migrate_disk_and_power_off(UUID, same_host=same_host, timeout=TIMEOUT))
    if same_host:
        for _ in range(2):
            run(driver.finish_migration(guest(BIGGER), same_host=True))
        assert info(driver) == base.GuestInfo(base.Power.RUNNING, 2, 512, 2)
    for _ in range(2):
        run(driver.confirm_migration(UUID, same_host=same_host))
    if same_host:
        assert info(driver) == base.GuestInfo(base.Power.RUNNING, 2, 512, 2)
    else:
        assert run(driver.list_guests()) == []  # the source holds nothing after confirm


def test_same_host_resize_then_revert_restores_the_original(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.migrate_disk_and_power_off(UUID, same_host=True, timeout=TIMEOUT))
    run(driver.finish_migration(guest(BIGGER), same_host=True))
    for _ in range(2):
        run(driver.finish_revert_migration(guest(TINY), same_host=True))
    assert info(driver) == base.GuestInfo(base.Power.RUNNING, 1, 256, 1)


def test_cross_host_revert_powers_the_original_back_on(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.migrate_disk_and_power_off(UUID, same_host=False, timeout=TIMEOUT))
    assert (i := info(driver)) is not None
    assert i.power is base.Power.STOPPED  # kept, powered off, until confirm or revert
    run(driver.finish_revert_migration(guest(TINY), same_host=False))
    assert info(driver) == base.GuestInfo(base.Power.RUNNING, 1, 256, 1)


def test_stopped_instance_stays_stopped_through_a_resize(driver: base.Driver) -> None:
    run(driver.spawn(guest(power_on=False)))
    run(driver.migrate_disk_and_power_off(UUID, same_host=True, timeout=TIMEOUT))
    run(driver.finish_migration(guest(BIGGER, power_on=False), same_host=True))
    assert (i := info(driver)) is not None
    assert i.power is base.Power.STOPPED


def test_destroy_removes_everything_and_is_idempotent(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.migrate_disk_and_power_off(UUID, same_host=True, timeout=TIMEOUT))
    run(driver.destroy(UUID))
    run(driver.destroy(UUID))
    assert run(driver.list_guests()) == []
    assert info(driver) is None


def test_fake_state_survives_a_restart(tmp_path: pathlib.Path) -> None:
    uuid = str(uuids.uuid4())
    first = fake.FakeDriver(Amount(4, 4096, 40), state_file=tmp_path / "s.json")
    run(first.spawn(base.Guest(uuid=uuid, flavor=TINY, image="cirros", power_on=True)))
    run(first.migrate_disk_and_power_off(uuid, same_host=True, timeout=TIMEOUT))
    second = fake.FakeDriver(Amount(4, 4096, 40), state_file=tmp_path / "s.json")
    assert second.has_revert_point(uuid)
