"""Cross-node moves of a real guest under faults: an agent SIGKILLed at every step
boundary, a source down through a confirm, a destination down through a revert, a
transfer cut mid-stream. Throughout, a sampler checks that the guest never runs on two
nodes at once; at the end, the guest reads its own marker and boot count."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane


def running(uuid: str) -> list[str]:
    return [n for n in guest.domains(running_only=True) if n.endswith(uuid)]


@contextlib.contextmanager
def at_most_one_running(uuid: str) -> Iterator[None]:
    """Fail if the guest ever runs on two nodes at once while the block runs."""
    seen: list[list[str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = running(uuid)
            if len(now) > 1:
                seen.append(now)
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not seen, f"the guest ran twice: {seen[:3]}"


def restart_after_kill(env: Env, node: str) -> None:
    assert env.agents[node].wait_exit(timeout=180) == -signal.SIGKILL, env.logs()
    env.start_libvirt_agent(node, shared_libvirtd=True)


RESIZE = [
    # The pre-copy (the guest runs): the base frozen, then received while it runs.
    ("node-a", "libvirt:base-frozen"),
    ("node-a", "base-frozen"),
    ("node-b", "disk-received"),
    ("node-a", "libvirt:stopped"),
    ("node-a", "source-set-aside"),
    # After the power-off: only the delta travels, and is assembled on node-b.
    ("node-b", "delta-received"),
    ("node-b", "libvirt:assembled"),
    ("node-b", "libvirt:grown"),
    ("node-b", "libvirt:defined"),
    ("node-b", "dest-finished"),
]
CONFIRM = [("node-a", "source-confirmed")]
REVERT = [
    ("node-b", "dest-released"),
    ("node-a", "libvirt:base-thawed"),  # the delta committed back into the original
    ("node-a", "source-reverted"),
]


@pytest.mark.parametrize(
    ("node", "point", "then"),
    [(n, p, "confirm") for n, p in RESIZE + CONFIRM] + [(n, p, "revert") for n, p in REVERT],
    ids=str,
)
def test_agent_killed_at(env: Env, image: pathlib.Path, node: str, point: str, then: str) -> None:
    during_resize = (node, point) in RESIZE
    faults = {node: f"agent:{point}"} if during_resize else {}
    uuid = guest.booted(env, image, shared_libvirtd=True, fault=faults.get("node-a", ""))
    env.start_libvirt_agent("node-b", shared_libvirtd=True, fault=faults.get("node-b", ""))
    with at_most_one_running(uuid):
        assert env.resize("vm", "e2e.two").ok
        if during_resize:
            restart_after_kill(env, node)
        env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
        assert guest.boots(env, "node-b", uuid, 1).boots == 2
        if not during_resize:  # arm the point on a fresh agent of that node, then act
            env.agents[node].stop()
            env.start_libvirt_agent(node, shared_libvirtd=True, fault=f"agent:{point}")
        env.annotate("vm", "resize", then)
        if not during_resize:
            restart_after_kill(env, node)
        inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    where = "node-b" if then == "confirm" else "node-a"
    assert inst["status"]["node"] == where
    last = env.wait_for(
        lambda: (
            (r := guest.reports(env, where, uuid))
            and r[-1].cpus == (2 if then == "confirm" else 1)
            and r[-1]
        ),
        timeout=120,
        what="the guest's last report",
    )
    assert last.marker == guest.MARKER
    other = "node-a" if where == "node-b" else "node-b"
    env.wait_for(
        lambda: not (env.instances_path(other) / uuid).exists(),
        timeout=60,
        what=f"{other} holding nothing of the guest",
    )


def test_a_confirm_with_the_source_down_completes_and_the_source_cleans_up_on_return(
    env: Env, image: pathlib.Path
) -> None:
    uuid = guest.booted(env, image, shared_libvirtd=True)
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    env.agents["node-a"].kill()  # the source node goes away
    env.annotate("vm", "resize", "confirm")
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)  # after serviceDownTimeSeconds (6 s)
    assert (inst["status"]["node"], inst["status"]["flavor"]["name"]) == ("node-b", "e2e.two")
    cond = next(c for c in inst["status"]["conditions"] if c["type"] == "NodeDown")
    assert (cond["status"], cond["reason"]) == ("False", "ConfirmedWithoutSource")
    assert "node-a" in cond["message"]
    assert any(e[1] == "ConfirmedWithoutSource" and "node-a" in e[2] for e in env.events("vm"))
    env.wait_for(lambda: env.usage("node-a").get("memoryMiB") == 0, what="node-a's claim released")
    assert (env.instances_path("node-a") / uuid).exists()  # nobody could remove it yet
    env.start_libvirt_agent("node-a", shared_libvirtd=True)  # it comes back
    env.wait_for(
        lambda: not (env.instances_path("node-a") / uuid).exists(),
        timeout=60,
        what="node-a removing its leftovers",
    )
    assert running(uuid) == [f"node-b-{uuid}"]
    mig = env.migrations()[-1]
    assert mig["status"]["sourceCleaned"] is True


def test_a_revert_waits_for_a_down_destination_and_the_guest_runs_once(
    env: Env, image: pathlib.Path
) -> None:
    uuid = guest.booted(env, image, shared_libvirtd=True)
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    with at_most_one_running(uuid):
        assert env.resize("vm", "e2e.two").ok
        env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
        env.agents["node-b"].kill()  # the destination goes away, its guest still running
        env.annotate("vm", "resize", "revert")
        down = env.wait_for(
            lambda: next(
                (
                    c
                    for c in env.instance("vm")["status"].get("conditions", [])
                    if c["type"] == "NodeDown" and c["status"] == "True"
                ),
                None,
            ),
            timeout=60,
            what="the NodeDown condition",
        )
        assert down["reason"] == "DestinationDown"
        assert "node-b" in down["message"]
        assert "since" in down["message"]
        assert any(e[1] == "DestinationDown" for e in env.events("vm"))
        assert env.phase("vm") == "REVERT_RESIZE"  # waiting: the original must not start
        assert running(uuid) == [f"node-b-{uuid}"]
        env.start_libvirt_agent("node-b", shared_libvirtd=True)
        inst = env.wait_phase("vm", "ACTIVE", timeout=180)
    assert (inst["status"]["node"], inst["spec"]["flavor"]) == ("node-a", "e2e.one")
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.cpus, back.marker, back.boots) == (1, guest.MARKER, 2)
    assert running(uuid) == [f"node-a-{uuid}"]


def test_a_transfer_cut_mid_stream_resumes_after_the_source_returns(
    env: Env, image: pathlib.Path
) -> None:
    # 256 MiB of data on the disk beyond the guest's own sectors: the transfer takes a
    # while, and a cut at 200 MiB leaves verified frames to resume from.
    disk = image / "disk.qcow2"
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 16M 256M", str(disk)],
        check=True,
        capture_output=True,
    )
    uuid = guest.booted(env, image, shared_libvirtd=True, fault="agent:transfer-sending")
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    assert env.resize("vm", "e2e.two").ok
    restart_after_kill(env, "node-a")  # the source dies mid-stream, then comes back
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=240)
    log = env.agents["node-b"].tail(400)
    assert "trying again" in log  # deferred, not failed
    assert "resumed at offset" in log, log
    seen = guest.boots(env, "node-b", uuid, 1)
    assert (seen.marker, seen.boots) == (guest.MARKER, 2)
    assert not [m for m in env.migrations() if m["status"].get("phase") == "error"]
