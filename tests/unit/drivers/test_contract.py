"""The driver contract: every driver (fake, libvirt against the real libvirtd) passes these.

Each test runs one of Nova's flows through the Driver protocol and checks what the
hypervisor then reports, including that every step is idempotent (run twice = once)
and that the original survives until confirm.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
UNPLUG_WAIT = 3.0  # nor does it give hot-plugged memory back: a live revert then goes cold


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _libvirt(tmp: pathlib.Path) -> base.Driver:
    try:
        from kubenova.drivers import libvirt  # noqa: PLC0415 - needs libvirt-python

        driver = libvirt.LibvirtDriver(
            uri="qemu:///system",
            instances_path=tmp / "instances",
            images_path=tmp / "images",
            virt_type="qemu",
            unplug_wait_seconds=UNPLUG_WAIT,
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
IMAGE = "blank"  # an empty image: a blank disk of the flavor's size, no OS
MIG, OTHER = str(uuids.uuid4()), str(uuids.uuid4())  # two Migrations' uids
# The Instance each guest is made for (namespace/name): the kubevirt driver's VM is owned
# by it, so tests/kind/test_3_kubevirt_contract.py creates it there.
OWNER = "default/driver-contract"


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[base.Driver]:
    global UUID  # noqa: PLW0603 - the per-test value the helpers below read
    UUID = str(uuids.uuid4())
    (tmp_path / "images" / IMAGE).mkdir(parents=True)
    d = DRIVERS[request.param](tmp_path)
    yield d
    run(d.destroy(UUID))


def guest(flavor: Amount = TINY, power_on: bool = True) -> base.Guest:
    return base.Guest(uuid=UUID, flavor=flavor, image=IMAGE, power_on=power_on, name=OWNER)


def set_aside(driver: base.Driver, *, same_host: bool = True, mig: str = MIG) -> None:
    run(
        driver.migrate_disk_and_power_off(UUID, migration=mig, same_host=same_host, timeout=TIMEOUT)
    )


def finish(
    driver: base.Driver, flavor: Amount = BIGGER, *, power_on: bool = True, mig: str = MIG
) -> None:
    run(driver.finish_migration(guest(flavor, power_on), migration=mig, same_host=True))


def revert(driver: base.Driver, *, same_host: bool = True, mig: str = MIG) -> None:
    run(driver.finish_revert_migration(guest(TINY), migration=mig, same_host=same_host))


def confirm(driver: base.Driver, *, same_host: bool = True, mig: str = MIG) -> None:
    run(driver.confirm_migration(UUID, migration=mig, same_host=same_host))


HOTPLUG = 4  # both drivers' default headroom: a running guest may grow to 4x its flavor


def running(vcpus: int, memory_mib: int, disk_gib: int) -> base.GuestInfo:
    """A running guest of these sizes, defined with the default hot-plug headroom."""
    return base.GuestInfo(
        base.Power.RUNNING, vcpus, memory_mib, disk_gib, HOTPLUG * vcpus, HOTPLUG * memory_mib
    )


def info(driver: base.Driver) -> base.GuestInfo | None:
    return run(driver.get_info(UUID))  # type: ignore[no-any-return]


def test_spawn_is_idempotent(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.spawn(guest()))
    assert info(driver) == running(1, 256, 1)
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
        set_aside(driver, same_host=same_host)
    if same_host:
        for _ in range(2):
            finish(driver)
        assert info(driver) == running(2, 512, 2)
    for _ in range(2):
        confirm(driver, same_host=same_host)
    if same_host:
        assert info(driver) == running(2, 512, 2)
    else:
        assert run(driver.list_guests()) == []  # the source holds nothing after confirm


def test_same_host_resize_then_revert_restores_the_original(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    set_aside(driver)
    finish(driver)
    for _ in range(2):
        revert(driver)
    assert info(driver) == running(1, 256, 1)


def test_cross_host_revert_powers_the_original_back_on(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    set_aside(driver, same_host=False)
    # Kept, not running, until confirm or revert (a KubeVirt source has handed its VM over:
    # no guest is defined there, only its files are kept).
    i = info(driver)
    assert i is None or i.power is base.Power.STOPPED
    assert run(driver.list_guests()) == [UUID]
    revert(driver, same_host=False)
    assert info(driver) == running(1, 256, 1)


def test_a_pre_copy_freezes_only_a_running_guest_and_a_revert_keeps_it_running(
    driver: base.Driver,
) -> None:
    run(driver.spawn(guest()))
    for _ in range(2):  # idempotent
        assert run(driver.freeze_base(UUID, migration=MIG)) is True  # an overlay takes its writes
    assert info(driver) == running(1, 256, 1)  # nothing the guest sees changed
    revert(driver, same_host=False)  # the move failed before the power-off
    assert info(driver) == running(1, 256, 1)


def test_a_stopped_guests_disk_needs_no_freeze(driver: base.Driver) -> None:
    run(driver.spawn(guest(power_on=False)))
    assert run(driver.freeze_base(UUID, migration=MIG)) is False
    set_aside(driver, same_host=False)
    run(driver.finish_revert_migration(guest(power_on=False), migration=MIG, same_host=False))
    assert (i := info(driver)) is not None
    assert i.power is base.Power.STOPPED


def test_stopped_instance_stays_stopped_through_a_resize(driver: base.Driver) -> None:
    run(driver.spawn(guest(power_on=False)))
    set_aside(driver)
    finish(driver, power_on=False)
    assert (i := info(driver)) is not None
    assert i.power is base.Power.STOPPED


def test_destroy_removes_everything_and_is_idempotent(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    set_aside(driver)
    run(driver.destroy(UUID))
    run(driver.destroy(UUID))
    assert run(driver.list_guests()) == []
    assert info(driver) is None


def test_fake_state_survives_a_restart(tmp_path: pathlib.Path) -> None:
    uuid = str(uuids.uuid4())
    first = fake.FakeDriver(Amount(4, 4096, 40), state_file=tmp_path / "s.json")
    run(first.spawn(base.Guest(uuid=uuid, flavor=TINY, image="cirros", power_on=True)))
    run(first.migrate_disk_and_power_off(uuid, migration=MIG, same_host=True, timeout=TIMEOUT))
    second = fake.FakeDriver(Amount(4, 4096, 40), state_file=tmp_path / "s.json")
    assert second.has_revert_point(uuid)


# --- artefacts belong to a migration (design.md §6) ----------------------------------------


def test_a_revert_point_of_another_migration_is_never_taken_for_this_ones(
    driver: base.Driver,
) -> None:
    """A stale `<uuid>_resize` (its Migration deleted) must not make the next resize skip
    the set-aside and grow the live original in place; revert then restores this one's."""
    run(driver.spawn(guest()))
    set_aside(driver, mig=OTHER)
    finish(driver, mig=OTHER)  # the guest runs on the overlay; OTHER is then forgotten
    set_aside(driver)  # the next resize: the stale revert point goes, the current disk stays
    finish(driver, Amount(2, 512, 3))
    assert info(driver) == running(2, 512, 3)
    revert(driver)
    assert info(driver) == running(1, 256, 2)  # MIG's original


def test_steps_refuse_a_revert_point_that_is_not_this_migrations(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    set_aside(driver, mig=OTHER)
    for step in (finish, revert, confirm):
        with pytest.raises(base.DriverError, match=r"not this migration's|belongs to migration"):
            step(driver)  # type: ignore[operator]
    revert(driver, mig=OTHER)  # its own migration still can
    assert info(driver) == running(1, 256, 1)


def test_release_leaves_a_guest_that_is_not_this_migrations_alone(driver: base.Driver) -> None:
    """After a failed attempt, a later migration may have built the guest that runs here."""
    run(driver.spawn(guest()))
    run(driver.release_migration(UUID, migration=MIG))  # spawned here, not received for MIG
    assert info(driver) == running(1, 256, 1)
    assert run(driver.list_guests()) == [UUID]


def test_quarantine_takes_the_guest_away_and_purge_waits(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    run(driver.quarantine(UUID))
    assert info(driver) is None
    assert run(driver.list_guests()) == []
    assert run(driver.purge_quarantine(3600)) == []


# --- live resize (the guest keeps running) ---------------------------------------------------


def resize_live(driver: base.Driver, flavor: Amount = BIGGER, mig: str = MIG) -> None:
    run(driver.resize_live(guest(flavor), migration=mig))


def revert_live(driver: base.Driver, mig: str = MIG) -> base.Reverted:
    return run(driver.revert_live(guest(TINY), migration=mig, timeout=TIMEOUT))  # type: ignore[no-any-return]


def test_live_resize_grows_the_running_guest_into_its_headroom(driver: base.Driver) -> None:
    run(driver.spawn(guest()))
    resize_live(driver)
    resize_live(driver)  # run again after a crash: the same guest, not grown twice
    # Never powered off; the headroom is the one it booted with (TINY's), not BIGGER's.
    assert info(driver) == base.GuestInfo(base.Power.RUNNING, 2, 512, 2, 4, 1024)
    confirm(driver)
    confirm(driver)
    assert info(driver) == base.GuestInfo(base.Power.RUNNING, 2, 512, 2, 4, 1024)


def test_live_resize_beyond_the_headroom_is_refused_and_changes_nothing(
    driver: base.Driver,
) -> None:
    run(driver.spawn(guest()))
    with pytest.raises(base.DriverError, match=r"without a reboot|no headroom"):
        resize_live(driver, Amount(5, 256, 1))
    assert info(driver) == running(1, 256, 1)


def test_live_resize_needs_a_running_guest(driver: base.Driver) -> None:
    run(driver.spawn(guest(power_on=False)))
    with pytest.raises(base.DriverError, match="not running"):
        resize_live(driver)


def test_revert_of_a_live_resize_that_grew_the_disk_is_cold_and_exact(
    driver: base.Driver,
) -> None:
    run(driver.spawn(guest()))
    resize_live(driver)
    reverted = revert_live(driver)
    assert not reverted.live
    assert "disk" in reverted.reason
    assert info(driver) == running(1, 256, 1)  # the original disk, booted on the old flavor
    revert_live(driver)  # again after a crash: nothing more happens
    assert info(driver) == running(1, 256, 1)


def test_revert_of_a_live_resize_gives_the_old_sizes_back(driver: base.Driver) -> None:
    """vCPUs and memory only: unplugged live where the guest lets go (a guest without an
    OS never answers a vCPU unplug: libvirt then reverts cold), the old sizes either way."""
    run(driver.spawn(guest()))
    resize_live(driver, Amount(2, 512, 1))
    revert_live(driver)
    got = info(driver)
    assert got is not None
    assert (got.power, got.vcpus, got.memory_mib, got.disk_gib) == (base.Power.RUNNING, 1, 256, 1)


def test_a_live_overlay_of_another_migration_is_never_confirmed_or_dropped(
    driver: base.Driver,
) -> None:
    run(driver.spawn(guest()))
    resize_live(driver, mig=OTHER)
    revert_live(driver)  # MIG made nothing: the guest keeps OTHER's disk, only sizes go
    with pytest.raises(base.DriverError, match="not this migration's"):
        confirm(driver)  # nor does MIG's confirm touch OTHER's overlay
    got = info(driver)
    assert got is not None
    assert got.disk_gib == 2


def test_a_redefine_without_the_disk_makes_nothing_from_the_image(driver: base.Driver) -> None:
    """The guest was deleted outside kubenova and its disk is gone too: defining it again
    must fail loudly, never boot a fresh disk from the image as if it were the guest's."""
    with pytest.raises(base.DriverError, match="no disk is left"):
        run(driver.spawn(dataclasses.replace(guest(), redefine=True)))
    assert run(driver.get_info(UUID)) is None
    assert UUID not in run(driver.list_guests())
