"""Live or cold, as the controller decides it against a real API server (fake driver):
which path a resize takes, why (on the Migration), and how its revert went."""

from __future__ import annotations

import pytest

from tests.env import Env

pytestmark = pytest.mark.controlplane

ROOM_FOR_TINY = "vcpus=2,memoryMiB=1024,diskGiB=10"


def _wide(env: Env) -> None:
    """m1.wide: m1.tiny with 2 vCPUs and twice the memory, the same disk."""
    result = env.kubectl.apply(
        {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "m1.wide"},
            "spec": {"vcpus": 2, "memoryMiB": 1024, "diskGiB": 1},
        }
    )
    assert result.ok, result.stderr


def test_a_grow_that_fits_is_live_and_its_revert_unplugs(env: Env) -> None:
    _wide(env)
    env.start_controller()  # liveResize is on by default
    env.start_agent("node-a")
    env.create("vm")
    uuid = env.wait_phase("vm", "ACTIVE")["status"]["uuid"]
    assert env.wait_for(lambda: env.instance("vm")["status"]["host"].get("maxVcpus") == 4)

    assert env.resize("vm", "m1.wide").ok
    inst = env.wait_phase("vm", "VERIFY_RESIZE")
    assert (inst["status"]["host"]["vcpus"], inst["status"]["host"]["memoryMiB"]) == (2, 1024)
    [mig] = env.migrations()
    assert (mig["spec"]["mode"], mig["spec"]["destNode"]) == ("live", "node-a")
    assert "headroom" in mig["spec"]["modeReason"]
    # Events are posted in the background, just after the write they describe.
    scheduled = env.wait_for(
        lambda: [m for _, r, m in env.events("vm") if r == "ResizeScheduled"],
        what="a ResizeScheduled event",
    )
    assert "live: grows only" in scheduled[0], scheduled

    env.annotate("vm", "resize", "revert")
    inst = env.wait_phase("vm", "ACTIVE")
    assert inst["spec"]["flavor"] == "m1.tiny"
    assert (inst["status"]["host"]["vcpus"], inst["status"]["host"]["memoryMiB"]) == (1, 512)
    [mig] = env.migrations()
    assert (mig["status"]["phase"], mig["status"]["revertMode"]) == ("reverted", "live")
    assert env.guests("node-a")[uuid]["power"] == "Running"


def test_without_room_on_its_node_auto_goes_cold_and_live_is_refused(env: Env) -> None:
    env.start_controller()  # liveResize is on by default
    env.start_agent("node-a", ROOM_FOR_TINY)
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    env.start_agent("node-b")

    # Live asked: only node-a would do, and it has no room for m1.small.
    env.kubectl("patch", "instance", "vm", "--type=merge", "-p", '{"spec":{"resizePolicy":"Live"}}')
    assert env.resize("vm", "m1.small").ok

    def refused() -> str | None:
        for c in env.instance("vm")["status"].get("conditions", []):
            if c["type"] == "ResizeFailed" and c["reason"] == "LiveResizeImpossible":
                return str(c["message"])
        return None

    message = env.wait_for(refused, what="ResizeFailed=LiveResizeImpossible")
    assert "no valid host" in message
    assert "stays on node-a" in message
    assert env.migrations() == []

    # Auto: the same resize goes cold to the node with room, and says why.
    env.kubectl("patch", "instance", "vm", "--type=merge", "-p", '{"spec":{"resizePolicy":"Auto"}}')
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=90)
    [mig] = env.migrations()
    assert (mig["spec"]["mode"], mig["spec"]["destNode"]) == ("cold", "node-b")
    assert "node-a has no room" in mig["spec"]["modeReason"]


@pytest.mark.parametrize(
    ("environ", "policy", "why"),
    [
        ({"KUBENOVA_LIVE_RESIZE": "false"}, "Auto", "live resize is turned off"),
        ({}, "Cold", "spec.resizePolicy is Cold"),
    ],
    ids=["cluster-forbids", "instance-asks-cold"],
)
def test_the_same_grow_is_cold_where_the_cluster_or_the_instance_says_so(
    env: Env, environ: dict[str, str], policy: str, why: str
) -> None:
    _wide(env)
    env.start_controller(environ=environ)
    env.start_agent("node-a")
    env.create("vm", resizePolicy=policy)
    env.wait_phase("vm", "ACTIVE")
    assert env.wait_for(lambda: env.instance("vm")["status"]["host"].get("maxVcpus") == 4)

    assert env.resize("vm", "m1.wide").ok
    env.wait_phase("vm", "VERIFY_RESIZE")
    [mig] = env.migrations()
    assert (mig["spec"]["mode"], mig["spec"]["destNode"]) == ("cold", "node-a")
    assert why in mig["spec"]["modeReason"]
