"""A Migration create whose answer is lost (the connection drops after the API server
stored it): the controller sends it again by the same deterministic name, meets its own
first attempt (409) and adopts it. Exactly one work order exists and the resize completes."""

from __future__ import annotations

import pytest

from tests.chaos import invariants
from tests.env import Env

pytestmark = pytest.mark.controlplane


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(env: Env) -> None:
    controller = env.start_controller(fault="controller:fail-once:create-response-lost")
    env.start_agent("node-a")
    env.create("vm")
    uid = env.wait_phase("vm", "ACTIVE")["metadata"]["uid"]
    with invariants.sampling(env) as seen:
        assert env.resize("vm", "m1.small").ok
        env.wait_phase("vm", "VERIFY_RESIZE")
        env.annotate("vm", "resize", "confirm")
        env.wait_phase("vm", "ACTIVE")
        converged = invariants.wait_converged(env, timeout=30)
        assert invariants.check(env, settled=True) == []
    assert not converged.violations
    assert seen.report() == []
    [mig] = env.migrations()
    assert mig["metadata"]["name"] == f"vm-{uid[:8]}-1"
    assert mig["status"]["phase"] == "confirmed"
    assert env.instance("vm")["status"]["flavor"]["name"] == "m1.small"
    log = controller.log.read_text()
    assert "failing controller:create-response-lost once" in log  # the fault did strike
    assert f"adopting migration vm-{uid[:8]}-1" in log
