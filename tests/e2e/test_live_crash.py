"""SIGKILL the libvirt agent at every step boundary of a live resize, its confirm and its
revert: after a restart the instance converges, the guest never rebooted where it should
not have, and it still reads its marker."""

from __future__ import annotations

import pathlib
import signal

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

RESIZE = ["source-set-aside", "libvirt:live-overlay", "libvirt:plugged", "dest-finished"]
CONFIRM = ["libvirt:live-committed", "source-confirmed"]
REVERT = ["libvirt:live-reverting", "source-reverted"]
BIG_DISK = 4 * guest.SECTORS_PER_GIB


def _booted(env: Env, image: pathlib.Path, fault: str) -> str:
    guest.flavors(env, {"live.small": (1, 512, 2), "live.big": (2, 1024, 4)})
    env.start_controller()  # liveResize is on by default
    env.start_libvirt_agent("node-a", fault=fault)
    env.create("vm", "live.small", image=image.name, shutdownTimeoutSeconds=3)
    uuid: str = env.wait_phase("vm", "ACTIVE", timeout=120)["status"]["uuid"]
    assert guest.boots(env, "node-a", uuid, 1).boots == 1
    return uuid


def _restart_after_kill(env: Env) -> None:
    agent = env.agents["node-a"]
    assert agent.wait_exit(timeout=180) == -signal.SIGKILL, env.logs()
    env.start_libvirt_agent("node-a")


def _armed(env: Env, point: str) -> None:
    env.agents["node-a"].stop()
    env.start_libvirt_agent("node-a", fault=f"agent:{point}")


@pytest.mark.parametrize("point", RESIZE + CONFIRM + REVERT)
def test_agent_killed_during_a_live_resize_at(env: Env, image: pathlib.Path, point: str) -> None:
    uuid = _booted(env, image, fault=f"agent:{point}" if point in RESIZE else "")
    overlay = env.instances_path("node-a") / uuid / "disk.live"
    assert env.resize("vm", "live.big").ok
    if point in RESIZE:
        _restart_after_kill(env)
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    grown = guest.now(env, "node-a", uuid, lambda r: r.cpus == 2 and r.disk_sectors == BIG_DISK)
    assert (grown.boots, grown.marker) == (1, guest.MARKER)  # the crash never rebooted it

    if point in REVERT:
        _armed(env, point)
        env.annotate("vm", "resize", "revert")
        _restart_after_kill(env)
        inst = env.wait_phase("vm", "ACTIVE", timeout=180)
        assert inst["spec"]["flavor"] == "live.small"
        back = guest.boots(env, "node-a", uuid, 2)  # the disk grew: reverted cold, booted
        assert (back.cpus, back.disk_sectors, back.marker) == (
            1,
            2 * guest.SECTORS_PER_GIB,
            guest.MARKER,
        )
        assert not overlay.exists()
        return

    if point in CONFIRM:
        _armed(env, point)
    env.annotate("vm", "resize", "confirm")
    if point in CONFIRM:
        _restart_after_kill(env)
    inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert inst["status"]["host"]["diskGiB"] == 4
    env.wait_for(lambda: not overlay.exists(), what="the overlay committed and removed")
    assert len(guest.reports(env, "node-a", uuid)) == 1  # still the first boot
    guest.reboot(env, "vm")
    after = guest.boots(env, "node-a", uuid, 2)
    assert (after.cpus, after.disk_sectors, after.marker, after.boots) == (
        2,
        BIG_DISK,
        guest.MARKER,
        2,
    )
