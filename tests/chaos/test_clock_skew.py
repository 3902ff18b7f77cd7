"""Clocks that are wrong by 30 s either way (KUBENOVA_CLOCK_SKEW_SECONDS): a skewed standby
controller does not take the lease from a live leader, and once it leads (the leader
SIGKILLed) it does not judge the nodes down because of its own clock; an agent whose clock
is wrong stays up and takes a cross-node resize through to its confirm."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.chaos import invariants, scenario
from tests.env import Env

pytestmark = pytest.mark.controlplane

SKEWS = pytest.mark.parametrize("skew", [30, -30], ids=["ahead", "behind"])
SERVICE_DOWN_TIME = 6  # tests/env.py FAST: a node silent this long is down
LEASE_SECONDS = 3


def skewed(seconds: int) -> dict[str, str]:
    return {"KUBENOVA_CLOCK_SKEW_SECONDS": str(seconds)}


def clock_of(env: Env, lease: str) -> float:
    """How far the clock of a Lease's last writer runs from ours (its renewTime is written
    from that clock): the skew is really in effect."""
    renewed = env.kubectl.get_json("lease", lease)["spec"]["renewTime"]
    return (scenario.timestamp(renewed) - datetime.datetime.now(datetime.UTC)).total_seconds()


def up(env: Env, *nodes: str) -> bool:
    return all(env.hypervisor(n).get("status", {}).get("state") == "up" for n in nodes)


def cross_node_resize(env: Env) -> dict[str, Any]:
    """vm (m1.tiny on node-a, resizePolicy Cold) to m1.small, which the spread weigher puts
    on node-b; confirm."""
    assert env.resize("vm", "m1.small").ok
    assert env.wait_phase("vm", "VERIFY_RESIZE")["status"]["node"] == "node-b"
    env.annotate("vm", "resize", "confirm")
    return env.wait_phase("vm", "ACTIVE")


@SKEWS
def test_a_skewed_standby_waits_for_a_dead_leader_and_keeps_the_nodes_up(
    env: Env, skew: int
) -> None:
    leader = env.start_controller("--identity=leader", *scenario.LEASE)
    env.wait_for(lambda: scenario.holder(env) == "leader", what="leader holds the lease")
    env.start_agent("node-a")
    env.create("vm", resizePolicy="Cold")  # a move, not a live resize on node-a
    env.wait_phase("vm", "ACTIVE")
    env.start_agent("node-b")
    standby = env.start_controller(
        "--identity=skewed", *scenario.LEASE, name="skewed", environ=skewed(skew)
    )
    env.wait_for(lambda: "standing by" in standby.tail(), what="the skewed standby waiting")
    env.wait_for(lambda: "webhook configuration" in standby.tail(), what="its webhook")
    # Three lease durations: a clock 30 s off must not make a live lease look expired.
    scenario.always(
        lambda: scenario.holder(env) == "leader",
        seconds=3 * LEASE_SECONDS,
        what="the skewed standby took the lease from a live leader",
    )

    with invariants.sampling(env) as seen:
        leader.kill()
        env.wait_for(lambda: scenario.holder(env) == "skewed", timeout=30, what="takeover")
        assert abs(clock_of(env, "kubenova-controller") - skew) < 5
        # Longer than serviceDownTimeSeconds, with hypervisor syncs every 2 s meanwhile.
        scenario.always(
            lambda: up(env, "node-a", "node-b"),
            seconds=SERVICE_DOWN_TIME + 3,
            what=f"a node judged down by the skewed leader\n{standby.tail()}",
        )
        inst = cross_node_resize(env)
        assert up(env, "node-a", "node-b")
        converged = invariants.wait_converged(env, timeout=30)
        assert invariants.check(env, settled=True) == []
    assert inst["status"]["flavor"] == {
        "name": "m1.small",
        "vcpus": 1,
        "memoryMiB": 2048,
        "diskGiB": 20,
    }  # type: ignore[comparison-overlap]
    assert not [c for c in env.instance("vm")["status"]["conditions"] if c["type"] == "NodeDown"]
    assert not converged.violations
    assert seen.report() == []


@SKEWS
def test_an_agent_with_a_skewed_clock_stays_up_and_takes_a_resize(env: Env, skew: int) -> None:
    env.start_controller()
    env.start_agent("node-a")
    env.create("vm", resizePolicy="Cold")  # a move, not a live resize on node-a
    env.wait_phase("vm", "ACTIVE")
    with invariants.sampling(env) as seen:
        env.start_agent("node-b", environ=skewed(skew))
        assert abs(clock_of(env, "kubenova-node-node-b") - skew) < 5
        scenario.always(
            lambda: up(env, "node-b"),
            seconds=SERVICE_DOWN_TIME + 3,
            what="the skewed agent's node judged down",
        )
        inst = cross_node_resize(env)
        assert up(env, "node-a", "node-b")
        converged = invariants.wait_converged(env, timeout=30)
        assert invariants.check(env, settled=True) == []
    assert inst["status"]["node"] == "node-b"
    assert not converged.violations
    assert seen.report() == []
