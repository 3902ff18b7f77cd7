"""Cross-node moves that send the disk while the guest runs (pre-copy), with a real guest
writing all the while: 300 MiB of data on its disk, and a tick written (and fsynced) every
0.2 s with 1 MiB of new data, each tick printed only once it is on disk. Whatever the guest
printed before the power-off is what it finds on the other side; a revert gives back
exactly what it had at power-off; killing either agent mid pre-copy resumes the transfer."""

from __future__ import annotations

import pathlib
import signal
from typing import Any

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

WRITER = "KUBENOVA-WRITER interval=0.2 mib=1 ring=128"
FILL_MIB = 300  # more than the transfer's kill mark (200 MB), so a kill lands mid-stream


@pytest.fixture
def writing(env: Env, guest_image: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    where = tmp_path / "images" / guest.IMAGE
    return guest.image_with_marker(guest_image, where, writer=WRITER, fill_mib=FILL_MIB)


def started(env: Env, image: pathlib.Path, faults: dict[str, str]) -> str:
    uuid = guest.booted(env, image, shared_libvirtd=True, fault=faults.get("node-a", ""))
    env.start_libvirt_agent("node-b", shared_libvirtd=True, fault=faults.get("node-b", ""))
    assert guest.kept(env, "node-a", uuid, 1) == 0  # a fresh disk: no tick yet
    env.wait_for(lambda: len(guest.ticks(env, "node-a", uuid, 1)) >= 5, what="the guest writing")
    return uuid


def latest(env: Env) -> dict[str, Any]:
    return max(env.migrations(), key=lambda m: m["metadata"]["creationTimestamp"])


def moved(env: Env, uuid: str, *, ask: bool = True, whole: bool = True) -> dict[str, Any]:
    """Migrate to node-b (`ask`: annotate it here); returns the Migration once the Instance
    is in VERIFY_RESIZE. `whole`: no agent was killed, so every byte was counted once."""
    if ask:
        env.annotate("vm", "migrate", "")
    assert env.wait_phase("vm", "VERIFY_RESIZE", timeout=240)["status"]["node"] == "node-b"
    mig = latest(env)
    assert mig["spec"]["preCopy"] is True
    pre = mig["status"]["preCopy"]
    assert (pre["base"], pre["overlay"], pre["copy"]) == ("offered", True, "received")
    sent = mig["status"]["transfer"]
    # The base went while the guest ran; only what it wrote since went after power-off.
    assert sent["bytesWhileRunning"] >= (FILL_MIB << 20 if whole else 1)
    assert 0 < sent["bytesAfterStop"] < FILL_MIB << 20
    assert mig["status"]["downtimeSeconds"] > 0
    return mig


def test_a_pre_copied_move_loses_no_write_and_its_revert_gives_back_the_power_off_state(
    env: Env, writing: pathlib.Path
) -> None:
    uuid = started(env, writing, {})
    moved(env, uuid)
    printed = guest.ticks(env, "node-a", uuid, 1)[-1]
    arrived = guest.kept(env, "node-b", uuid, 2)
    # Every tick printed on node-a was on the disk that travelled (and one more may be,
    # written but not yet printed at the power-off).
    assert printed <= arrived <= printed + 1
    assert guest.boots(env, "node-b", uuid, 1).marker == guest.MARKER
    source = env.instances_path("node-a") / uuid
    assert (source / "disk").exists()  # the original, base and delta, waits for confirm
    assert (source / "disk.delta").exists()
    env.wait_for(lambda: len(guest.ticks(env, "node-b", uuid, 2)) >= 5, what="writes on node-b")

    env.annotate("vm", "resize", "revert")
    assert env.wait_phase("vm", "ACTIVE", timeout=180)["status"]["node"] == "node-a"
    back = guest.kept(env, "node-a", uuid, 2)
    assert back == arrived  # exactly what node-a held at power-off; node-b's writes went
    assert not (source / "disk.delta").exists()  # committed into the original, one disk again
    assert guest.boots(env, "node-a", uuid, 2).marker == guest.MARKER
    assert not (env.instances_path("node-b") / uuid).exists()

    # Again, confirmed: what the guest wrote on node-b survives a reboot there.
    env.wait_for(lambda: len(guest.ticks(env, "node-a", uuid, 2)) >= 5, what="writes again")
    moved(env, uuid)
    env.annotate("vm", "resize", "confirm")
    env.wait_phase("vm", "ACTIVE", timeout=120)
    assert not source.exists()
    env.wait_for(lambda: len(guest.ticks(env, "node-b", uuid, 3)) >= 5, what="writes on node-b")
    guest.reboot(env, "vm")
    last = guest.ticks(env, "node-b", uuid, 3)[-1]
    assert guest.kept(env, "node-b", uuid, 4) >= last


@pytest.mark.parametrize(
    ("node", "point"),
    [("node-a", "transfer-sending"), ("node-b", "pre-copy-receiving")],
    ids=["source-killed-sending-the-base", "destination-killed-receiving-it"],
)
def test_an_agent_killed_mid_pre_copy_resumes_and_nothing_is_lost(
    env: Env, writing: pathlib.Path, node: str, point: str
) -> None:
    uuid = started(env, writing, {node: f"agent:{point}"})
    env.annotate("vm", "migrate", "")
    assert env.agents[node].wait_exit(timeout=180) == -signal.SIGKILL, env.logs()
    # The guest runs on while the agent is away: the base was still on its way.
    assert [d for d in guest.domains(running_only=True) if d.endswith(uuid)] == [f"node-a-{uuid}"]
    env.start_libvirt_agent(node, shared_libvirtd=True)
    # Resumed, not started again: a killed destination counts only what it received since.
    mig = moved(env, uuid, ask=False, whole=False)
    assert mig["status"]["transfer"]["bytesWhileRunning"] < 2 * (FILL_MIB << 20)
    printed = guest.ticks(env, "node-a", uuid, 1)[-1]
    assert printed <= guest.kept(env, "node-b", uuid, 2) <= printed + 1
    assert guest.boots(env, "node-b", uuid, 1).marker == guest.MARKER
