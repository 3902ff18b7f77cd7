"""Two controller replicas: one holds the Lease and acts; the other takes over when the
leader dies (SIGKILL, no clean hand-over) and finishes the work."""

from __future__ import annotations

import json

import pytest
from hack import controlplane

from tests.env import Env, Process

pytestmark = pytest.mark.controlplane

LEASE = ["--lease-duration-seconds=3"]


def holder(env: Env) -> str | None:
    result = env.kubectl.run("get", "lease", "kubenova-controller", "-o", "json")
    if not result.ok:
        return None
    held = json.loads(result.stdout)["spec"].get("holderIdentity")
    return held.rsplit("_", 1)[0] if held else held  # <--identity>_<incarnation>


def second_controller(env: Env) -> Process:
    # Each local controller points the one webhook configuration at itself (in a cluster a
    # Service fronts every replica): the standby starts last, so its webhook is the one
    # called, and flavor changes are still checked (failurePolicy Fail) once the leader dies.
    hook = [
        f"--webhook-port={controlplane.free_port()}",
        f"--webhook-cert-dir={env.dir / 'webhook-standby'}",
    ]
    proc = env._process(
        "controller-standby",
        ["controller", "--retry-base-seconds=0.5", "--identity=standby", *LEASE, *hook],
    )
    return proc.start()


def test_standby_takes_over_when_the_leader_dies(env: Env) -> None:
    env.start_controller("--identity=first", *LEASE)
    env.wait_for(lambda: holder(env) == "first", what="first holds the lease")
    standby = second_controller(env)
    try:
        env.start_agent("node-a")
        env.create("vm")
        env.wait_phase("vm", "ACTIVE")
        env.wait_for(lambda: "standing by" in standby.log.read_text(), what="standby waiting")
        assert holder(env) == "first"

        assert env.controller is not None
        env.controller.kill()
        env.wait_for(lambda: holder(env) == "standby", timeout=30, what="standby takes over")
        assert env.resize("vm", "m1.small").ok
        env.wait_phase("vm", "VERIFY_RESIZE")
        env.annotate("vm", "resize", "confirm")
        inst = env.wait_phase("vm", "ACTIVE")
        assert inst["status"]["flavor"]["name"] == "m1.small"
        assert len(env.migrations()) == 1
    finally:
        standby.stop()


def test_a_clean_shutdown_hands_the_lease_over(env: Env) -> None:
    env.start_controller("--identity=first", *LEASE)
    env.wait_for(lambda: holder(env) == "first", what="first holds the lease")
    assert env.controller is not None
    env.controller.stop()  # SIGTERM: releases the lease
    assert holder(env) in (None, "")
