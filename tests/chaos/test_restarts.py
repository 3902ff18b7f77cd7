"""The API server stopped for a few seconds mid-resize, mid-confirm and mid-revert, and
etcd crashed mid-resize: controller and agents ride it out and the user's request is
carried out, with the invariants green throughout and at the end. A controller that exits
meanwhile (it lost its lease) is restarted, as its Deployment would."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from tests.chaos import invariants, scenario
from tests.env import Env

pytestmark = pytest.mark.controlplane

Outage = Callable[[Env], contextlib.AbstractContextManager[None]]


def two_nodes(env: Env) -> None:
    """A controller and two slow fake nodes; `vm` (m1.tiny, resized cold) on node-a."""
    env.start_controller()  # restarted if it exits (scenario.deployment)
    env.start_agent("node-a", scenario.CAPACITY, scenario.SLOW)
    env.create("vm", resizePolicy="Cold")
    env.wait_phase("vm", "ACTIVE")
    # Started once `vm` is placed: the spread weigher then sends its resize to node-b.
    env.start_agent("node-b", scenario.CAPACITY, scenario.SLOW)


def resize_through(env: Env, outage: Outage, *, during: str) -> None:
    """Resize `vm` to m1.small across nodes, then confirm or revert it; `outage` strikes
    once the Migration shows the step `during` names."""
    with scenario.deployment(env), invariants.sampling(env) as seen:
        assert env.resize("vm", "m1.small").ok
        if during == "resize":
            scenario.wait_migration(env, "vm", scenario.IN_FLIGHT)
            with outage(env):
                pass
        env.wait_phase("vm", "VERIFY_RESIZE")
        then = "revert" if during == "revert" else "confirm"
        env.annotate("vm", "resize", then)
        if during != "resize":
            scenario.wait_migration(
                env, "vm", ("confirming",) if then == "confirm" else ("reverting",)
            )
            with outage(env):
                pass
        converged = invariants.wait_converged(env, timeout=60)
        assert not converged.violations, env.logs()
        flavor, node = ("m1.tiny", "node-a") if then == "revert" else ("m1.small", "node-b")
        inst = env.instance("vm")
        assert (inst["status"]["phase"], inst["spec"]["flavor"]) == ("ACTIVE", flavor)
        assert (inst["status"]["flavor"]["name"], inst["status"]["node"]) == (flavor, node)
        [mig] = env.migrations()
        assert mig["status"]["phase"] == ("reverted" if then == "revert" else "confirmed")
        assert invariants.check(env, settled=True) == []
    assert seen.taken > 0
    assert seen.report() == []


@pytest.mark.parametrize("during", ["resize", "confirm", "revert"])
def test_apiserver_restarted_mid(env: Env, during: str) -> None:
    two_nodes(env)
    resize_through(env, scenario.apiserver_down, during=during)


def test_etcd_crashed_mid_resize(env: Env) -> None:
    two_nodes(env)
    resize_through(env, scenario.etcd_crashed, during="resize")
