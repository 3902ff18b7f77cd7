"""SIGKILL the libvirt agent at every step boundary of a same-host resize and of a revert;
after a restart the instance converges and the guest still reads its marker."""

from __future__ import annotations

import pathlib
import signal

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

RESIZE = [  # inside migrate_disk_and_power_off, finish_migration, and between steps
    "libvirt:stopped",
    "libvirt:renamed",
    "source-set-aside",
    "libvirt:overlay-created",
    "libvirt:grown",
    "libvirt:defined",
    "dest-finished",
]
REVERT = [
    "libvirt:new-destroyed",
    "libvirt:new-removed",
    "libvirt:original-restored",
    "source-reverted",
]


def restart_after_kill(env: Env) -> None:
    agent = env.agents["node-a"]
    assert agent.wait_exit(timeout=180) == -signal.SIGKILL, env.logs()
    env.start_libvirt_agent("node-a")


@pytest.mark.parametrize("point", RESIZE + REVERT)
def test_agent_killed_at(env: Env, image: pathlib.Path, point: str) -> None:
    reverting = point in REVERT
    fault = "" if reverting else f"agent:{point}"
    uuid = guest.booted(env, image, fault=fault)
    assert env.resize("vm", "e2e.two").ok
    if not reverting:
        restart_after_kill(env)
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    if reverting:
        env.agents["node-a"].stop()
        env.start_libvirt_agent("node-a", fault=f"agent:{point}")
        env.annotate("vm", "resize", "revert")
        restart_after_kill(env)
        inst = env.wait_phase("vm", "ACTIVE", timeout=180)
        assert inst["spec"]["flavor"] == "e2e.one"
    last = env.wait_for(
        lambda: (
            guest.reports(env, "node-a", uuid)[-1:]
            and guest.reports(env, "node-a", uuid)[-1].cpus == (1 if reverting else 2)
            and guest.reports(env, "node-a", uuid)[-1]
        ),
        timeout=180,
        what="the guest's report after recovery",
    )
    assert last.marker == guest.MARKER  # the data survived the crash
    assert last.disk_sectors == (1 if reverting else 2) * guest.SECTORS_PER_GIB


def test_agent_killed_after_a_same_host_confirm(env: Env, image: pathlib.Path) -> None:
    uuid = guest.booted(env, image)
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    assert guest.boots(env, "node-a", uuid, 2).boots == 2  # booted, and wrote, on the new disk
    env.agents["node-a"].stop()
    env.start_libvirt_agent("node-a", fault="agent:source-confirmed")
    env.annotate("vm", "resize", "confirm")
    restart_after_kill(env)
    inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert inst["status"]["flavor"]["name"] == "e2e.two"
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()
    guest.reboot(env, "vm")
    after = guest.boots(env, "node-a", uuid, 3)
    assert (after.cpus, after.marker, after.boots) == (2, guest.MARKER, 3)


def test_agent_killed_right_after_spawning(env: Env, image: pathlib.Path) -> None:
    env.start_controller()
    env.start_libvirt_agent("node-a", fault="agent:spawned")
    for name, vcpus, mem, disk in (("e2e.one", 1, 256, 1),):
        env.kubectl.apply(
            {
                "apiVersion": "compute.kubenova.io/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": name},
                "spec": {"vcpus": vcpus, "memoryMiB": mem, "diskGiB": disk},
            }
        )
    env.create("vm", "e2e.one", image=image.name)
    restart_after_kill(env)
    uuid = env.wait_phase("vm", "ACTIVE", timeout=120)["status"]["uuid"]
    first = guest.boots(env, "node-a", uuid, 1)
    assert (first.marker, first.boots) == (guest.MARKER, 1)
    assert len(guest.reports(env, "node-a", uuid)) == 1  # spawned once, not twice


def test_agent_killed_right_after_destroying(env: Env, image: pathlib.Path) -> None:
    uuid = guest.booted(env, image)
    env.agents["node-a"].stop()
    env.start_libvirt_agent("node-a", fault="agent:destroyed")
    env.kubectl("delete", "instance", "vm", "--wait=false")
    restart_after_kill(env)
    env.wait_for(
        lambda: not env.kubectl.run("get", "instance", "vm").ok,
        timeout=60,
        what="the Instance gone",
    )
    assert not (env.instances_path("node-a") / uuid).exists()
