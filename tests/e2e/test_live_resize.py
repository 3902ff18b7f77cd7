"""Live resize of a real guest through the API: it grows without a reboot, the guest itself
reports the new sizes (and that it did not boot again), and the resize can still be
reverted (cold and exact when the disk grew) or confirmed."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

MIB = 1024
FLAVORS = {
    "live.small": (1, 512, 2),
    "live.big": (2, 1024, 4),  # the 1->2 vCPU, 512->1024 MiB, 2->4 GiB
    "live.fewer": (1, 1024, 4),  # fewer vCPUs than live.big: a shrink
}


def _migration(env: Env, n: int) -> dict[str, Any]:
    ours = sorted(
        (m for m in env.migrations() if m["spec"]["instanceName"] == "vm"),
        key=lambda m: m["metadata"]["name"],
    )
    return ours[n]


def test_live_grow_without_reboot_then_revert_then_confirm(env: Env, image: pathlib.Path) -> None:
    guest.flavors(env, FLAVORS)
    env.start_controller()  # liveResize is on by default
    env.start_libvirt_agent("node-a")
    env.create("vm", "live.small", image=image.name, shutdownTimeoutSeconds=3)
    uuid = env.wait_phase("vm", "ACTIVE", timeout=120)["status"]["uuid"]
    first = guest.boots(env, "node-a", uuid, 1)
    assert (first.cpus, first.disk_sectors, first.boots) == (1, 2 * guest.SECTORS_PER_GIB, 1)
    original = env.instances_path("node-a") / uuid / "disk"

    # Live grow: in VERIFY_RESIZE the guest sees 2 vCPUs, ~512 MiB more and 4 GiB, on the
    # boot it started with.
    assert env.resize("vm", "live.big").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    assert _migration(env, 0)["spec"]["mode"] == "live", _migration(env, 0)["spec"]
    grown = guest.now(
        env, "node-a", uuid, lambda r: r.cpus == 2 and r.disk_sectors > first.disk_sectors
    )
    assert grown.boots == 1  # no reboot
    assert grown.disk_sectors == 4 * guest.SECTORS_PER_GIB
    grown = guest.now(
        env, "node-a", uuid, lambda r: r.memtotal_kib > first.memtotal_kib + 400 * MIB
    )
    assert (grown.boots, grown.marker) == (1, guest.MARKER)
    assert len(guest.reports(env, "node-a", uuid)) == 1  # one boot so far
    assert (original.parent / "disk.live").exists()  # the guest writes to the overlay

    # Revert: the disk grew, so it is cold and exact: the original disk, the old flavor.
    env.annotate("vm", "resize", "revert")
    inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert inst["spec"]["flavor"] == "live.small"
    mig = _migration(env, 0)
    assert (mig["status"]["phase"], mig["status"]["revertMode"]) == ("reverted", "cold")
    assert "disk grew" in mig["status"]["revertReason"]
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.cpus, back.disk_sectors, back.marker, back.boots) == (
        1,
        2 * guest.SECTORS_PER_GIB,
        guest.MARKER,
        2,
    )
    assert not (original.parent / "disk.live").exists()

    # A second live grow, confirmed: the overlay goes into the disk and the guest keeps it.
    assert env.resize("vm", "live.big").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    assert _migration(env, 1)["spec"]["mode"] == "live"
    assert guest.now(env, "node-a", uuid, lambda r: r.cpus == 2).boots == 2
    env.annotate("vm", "resize", "confirm")
    inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert inst["status"]["host"]["vcpus"] == 2
    assert inst["status"]["host"]["memoryMiB"] == 1024
    assert inst["status"]["host"]["diskGiB"] == 4
    assert not (original.parent / "disk.live").exists()
    assert len(guest.reports(env, "node-a", uuid)) == 2  # still no boot since the revert
    guest.reboot(env, "vm")
    after = guest.boots(env, "node-a", uuid, 3)
    assert (after.cpus, after.disk_sectors, after.marker, after.boots) == (
        2,
        4 * guest.SECTORS_PER_GIB,
        guest.MARKER,
        3,
    )

    # Live asked for a shrink: refused where the user looks, nothing scheduled.
    env.kubectl("patch", "instance", "vm", "--type=merge", "-p", '{"spec":{"resizePolicy":"Live"}}')
    assert env.resize("vm", "live.fewer").ok

    def refused() -> dict[str, Any] | None:
        found = [
            c
            for c in env.instance("vm")["status"].get("conditions", [])
            if c["type"] == "ResizeFailed" and c["reason"] == "LiveResizeImpossible"
        ]
        return found[0] if found else None

    condition = env.wait_for(refused, timeout=60, what="ResizeFailed LiveResizeImpossible")
    assert "shrinks vCPUs 2 -> 1" in condition["message"]
    assert any(r == "LiveResizeImpossible" for _, r, _ in env.events("vm"))
    assert len([m for m in env.migrations() if m["spec"]["instanceName"] == "vm"]) == 2
    assert env.instance("vm")["status"]["phase"] == "ACTIVE"
