"""SIGKILL the controller at every step boundary of a resize, a confirm and a revert; after
a restart it converges: the right phase and flavor, one Migration, correct usage.

The kill comes from the controller itself (KUBENOVA_FAULT=controller:<plan>:<write>),
right after the named write reached the API server and before the next one.
"""

from __future__ import annotations

import signal

import pytest

from tests.env import Env

pytestmark = pytest.mark.controlplane

RESIZE = [
    "ResizeScheduled:migration-created",
    "ResizeScheduled:migration-started",
    "ResizeScheduled:main",
    "ResizeScheduled:status",
    "VerifyResize:status",
]
CONFIRM = [
    # A confirm writes only the Migration: the annotation goes, and taskState shows
    # resize_confirming, only once the confirm has lasted (lifecycle.PROGRESS_SECONDS).
    "ConfirmResize:migration-confirming",
    "ResizeConfirmed:main",
    "ResizeConfirmed:status",
]
REVERT = [
    "RevertResize:migration-reverting",
    "RevertResize:main",
    "RevertResize:status",
    "ResizeReverted:main",
    "ResizeReverted:status",
]


def _killed_and_restarted(env: Env) -> None:
    assert env.controller is not None
    assert env.controller.wait_exit(timeout=60) == -signal.SIGKILL, env.logs()
    env.start_controller()


@pytest.mark.parametrize("point", RESIZE + CONFIRM + REVERT)
def test_controller_killed_at(env: Env, point: str) -> None:
    env.start_controller(fault=f"controller:{point}")
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    assert env.resize("vm", "m1.small").ok
    reverting = point in REVERT
    if point in RESIZE:
        _killed_and_restarted(env)
    env.wait_phase("vm", "VERIFY_RESIZE")
    env.annotate("vm", "resize", "revert" if reverting else "confirm")
    if point not in RESIZE:
        _killed_and_restarted(env)

    inst = env.wait_phase("vm", "ACTIVE")
    flavor = "m1.tiny" if reverting else "m1.small"
    assert inst["spec"]["flavor"] == flavor
    assert inst["status"]["flavor"]["name"] == flavor
    assert "compute.kubenova.io/resize" not in inst["metadata"].get("annotations", {})
    [mig] = env.migrations()  # exactly one: a restart never schedules the resize twice
    assert mig["status"]["phase"] == ("reverted" if reverting else "confirmed")
    memory = 512 if reverting else 2048
    env.wait_for(
        lambda: env.usage("node-a").get("memoryMiB") == memory,
        what=f"usage {memory} MiB, is {env.usage('node-a')}",
    )
    assert env.usage("node-a")["instances"] == 1
