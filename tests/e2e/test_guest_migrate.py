"""Cross-node resize and cold migrate of a real guest between two libvirt hypervisors
(two agents sharing this machine's libvirtd under distinct domain names, each with its
own instancesPath and transfer port); the disk travels over
the agents' transfer endpoint and the guest reports what it sees on the other side."""

from __future__ import annotations

import pathlib

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane


def domains(env: Env, node: str) -> list[str]:
    """Instance uuids of the domains node `node` has defined (its name prefix)."""
    return [n.removeprefix(f"{node}-") for n in guest.domains() if n.startswith(f"{node}-")]


@pytest.fixture
def two_nodes(env: Env, image: pathlib.Path) -> tuple[Env, str]:
    uuid = guest.booted(env, image, shared_libvirtd=True)
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    return env, uuid


def test_cross_node_resize_then_confirm(two_nodes: tuple[Env, str]) -> None:
    env, uuid = two_nodes
    assert env.resize("vm", "e2e.two").ok
    inst = env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    assert inst["status"]["node"] == "node-b"
    seen = guest.boots(env, "node-b", uuid, 1)
    assert (seen.cpus, seen.disk_sectors, seen.marker) == (
        2,
        2 * guest.SECTORS_PER_GIB,
        guest.MARKER,
    )
    assert seen.boots == 2  # the disk came with its first boot, and this one is written on it
    assert uuid in domains(env, "node-a")  # the original waits, powered off, until confirm

    env.annotate("vm", "resize", "confirm")
    env.wait_phase("vm", "ACTIVE", timeout=120)
    assert not (env.instances_path("node-a") / uuid).exists()
    assert uuid not in domains(env, "node-a")
    assert uuid in domains(env, "node-b")
    guest.reboot(env, "vm")  # what it wrote during VERIFY_RESIZE survived the confirm
    assert guest.boots(env, "node-b", uuid, 2).boots == 3


def test_cross_node_resize_then_revert(two_nodes: tuple[Env, str]) -> None:
    env, uuid = two_nodes
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    env.annotate("vm", "resize", "revert")
    inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert (inst["status"]["node"], inst["spec"]["flavor"]) == ("node-a", "e2e.one")
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.cpus, back.disk_sectors, back.marker) == (1, guest.SECTORS_PER_GIB, guest.MARKER)
    assert back.boots == 2  # the original's count: the boot on node-b went with its disk
    assert not (env.instances_path("node-b") / uuid).exists()
    assert uuid not in domains(env, "node-b")


def test_cold_migrate_then_confirm(two_nodes: tuple[Env, str]) -> None:
    env, uuid = two_nodes
    env.annotate("vm", "migrate", "")
    inst = env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    assert inst["status"]["node"] == "node-b"
    seen = guest.boots(env, "node-b", uuid, 1)
    assert (seen.cpus, seen.disk_sectors, seen.marker) == (1, guest.SECTORS_PER_GIB, guest.MARKER)
    env.annotate("vm", "resize", "confirm")
    env.wait_phase("vm", "ACTIVE", timeout=120)
    assert uuid not in domains(env, "node-a")
