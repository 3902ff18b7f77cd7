"""An API-server restart in the middle of a cross-node resize of a real guest: the disk
hand-off and the steps carry on once it is back, the resize completes with its confirm,
the guest never runs on two nodes, and after the confirm it boots with the new sizes and
the marker it was given (its own report, tests/e2e/guest.py)."""

from __future__ import annotations

import pathlib

import pytest

from tests.chaos import invariants, scenario
from tests.e2e import guest
from tests.e2e.test_cross_node_faults import at_most_one_running
from tests.env import Env

pytestmark = pytest.mark.controlplane


def test_an_apiserver_restart_mid_cross_node_resize_keeps_the_guest(
    env: Env, image: pathlib.Path
) -> None:
    uuid = guest.booted(env, image, shared_libvirtd=True)
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    with scenario.deployment(env), at_most_one_running(uuid):
        assert env.resize("vm", "e2e.two").ok
        mig = scenario.wait_migration(env, "vm", scenario.IN_FLIGHT, timeout=60)
        assert mig["spec"]["destNode"] == "node-b"
        with scenario.apiserver_down(env):
            pass
        inst = env.wait_phase("vm", "VERIFY_RESIZE", timeout=240)
        assert inst["status"]["node"] == "node-b"
        # Its first boot there, reported before the reboot below (a power-off mid-boot
        # would leave the reboot's report the first, not the second).
        assert guest.boots(env, "node-b", uuid, 1).cpus == 2
        env.annotate("vm", "resize", "confirm")
        inst = env.wait_phase("vm", "ACTIVE", timeout=120)
        assert (inst["status"]["node"], inst["status"]["flavor"]["name"]) == ("node-b", "e2e.two")
        assert [m["status"]["phase"] for m in env.migrations()] == ["confirmed"]
        guest.reboot(env, "vm")  # a boot after the confirm, on what the confirm kept
        after = guest.boots(env, "node-b", uuid, 2)
        assert (after.cpus, after.disk_sectors, after.marker) == (
            2,
            2 * guest.SECTORS_PER_GIB,
            guest.MARKER,
        )
        assert 256 * 1024 < after.memtotal_kib <= 512 * 1024  # more than e2e.one gave
        assert after.boots == 3  # the first boot's count came with the disk
        env.wait_for(
            lambda: not (env.instances_path("node-a") / uuid).exists(),
            what="node-a holding nothing of the guest",
        )
        assert invariants.check(env, settled=True) == []
