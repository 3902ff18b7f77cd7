"""Leader election under faults: a leader paused past its lease is replaced and, once it
runs again, writes nothing before it exits (the API server's audit log says who wrote
what, by the user agent naming each replica's identity); a leader keeps its lease through
an API outage shorter than its renew deadline."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hack import controlplane_faults as faults

from tests.chaos import invariants, scenario
from tests.env import Env

pytestmark = pytest.mark.controlplane

GROUP = "compute.kubenova.io"


def writes_by(env: Env, identity: str) -> list[dict[str, Any]]:
    """Audited writes to kubenova's objects by one controller replica."""
    agent = f"kubenova-controller/{identity}"
    return [
        e
        for e in env.plane.audit_events()
        if e["objectRef"].get("apiGroup") == GROUP and e.get("userAgent", "").startswith(agent)
    ]


def test_a_leader_paused_past_its_lease_is_replaced_and_writes_nothing_after(
    audited_env: Env,
) -> None:
    env = audited_env
    first = env.start_controller("--identity=first", *scenario.LEASE)
    env.wait_for(lambda: scenario.holder(env) == "first", what="first holds the lease")
    env.start_agent("node-a", scenario.CAPACITY, scenario.SLOW)
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    # Its webhook server points the configuration at itself: it answers while first is paused.
    standby = env.start_controller("--identity=standby", *scenario.LEASE, name="standby")
    env.wait_for(lambda: "standing by" in standby.tail(), what="standby waiting")
    env.wait_for(lambda: "webhook configuration" in standby.tail(), what="standby's webhook")

    with invariants.sampling(env) as seen:
        assert env.resize("vm", "m1.small").ok
        scenario.wait_migration(env, "vm", scenario.IN_FLIGHT)
        first.pause()  # mid-resize, its lease running out
        env.wait_for(lambda: scenario.holder(env) == "standby", timeout=30, what="takeover")
        env.wait_phase("vm", "VERIFY_RESIZE")
        env.annotate("vm", "resize", "confirm")
        env.wait_phase("vm", "ACTIVE")
        resumed = time.time()  # the API server's audit times are this machine's wall clock
        first.resume()
        assert first.wait_exit(timeout=20) == 1, first.tail()
        assert "leader election lost" in first.tail()
        converged = invariants.wait_converged(env, timeout=30)
        assert invariants.check(env, settled=True) == []
    assert not converged.violations
    assert seen.violations == []
    inst = env.instance("vm")
    assert (inst["status"]["flavor"]["name"], inst["spec"]["flavor"]) == ("m1.small", "m1.small")
    assert [m["status"]["phase"] for m in env.migrations()] == ["confirmed"]

    # The standby's writes are named too: the user agent tells the replicas apart.
    assert writes_by(env, "standby")
    old = writes_by(env, "first")
    assert old, "no write of the first leader audited: the check below would prove nothing"
    late = [
        e for e in old if scenario.timestamp(e["requestReceivedTimestamp"]).timestamp() >= resumed
    ]
    assert late == [], json.dumps(late, indent=1)


def renew_time(env: Env) -> str:
    result = env.kubectl.run("get", "lease", "kubenova-controller", "-o", "json")
    return str(json.loads(result.stdout)["spec"].get("renewTime")) if result.ok else ""


def test_a_leader_keeps_its_lease_through_an_outage_within_its_renew_deadline(env: Env) -> None:
    # 15 s lease: renewed every 2 s, lost if not renewed for 10 s.
    leader = env.start_controller("--identity=only", "--lease-duration-seconds=15")
    env.wait_for(lambda: scenario.holder(env) == "only", what="only holds the lease")
    process = scenario.lease_holder(env)
    last = renew_time(env)
    env.wait_for(lambda: renew_time(env) != last, what="a renew")
    renewed = time.monotonic()
    faults.stop_apiserver(env.plane, crash=True)
    # Down across the next renew (due 5 s after the last one), back ~3 s before the deadline.
    time.sleep(max(0.0, renewed + 5.5 - time.monotonic()))  # the outage's length
    faults.start_apiserver(env.plane)
    scenario.always(
        lambda: leader.proc is not None and leader.proc.poll() is None,
        seconds=max(0.0, renewed + 15 - time.monotonic()),
        what=f"the leader exited\n{leader.tail()}",
    )
    assert scenario.lease_holder(env) == process  # the same process, never replaced
