"""An Instance deleted mid-resize and created again under its name while garbage collection
lags (kube-controller-manager down, as through its own restart or failover): the old
Instance's Migration outlives it for a while, and the new Instance must not wait for it."""

from __future__ import annotations

import pytest
from hack import controlplane_faults as faults

from tests.chaos import invariants
from tests.env import Env

pytestmark = pytest.mark.controlplane


def test_a_new_instance_under_an_old_name_does_not_wait_for_the_old_migration(env: Env) -> None:
    env.start_controller()
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    env.start_agent("node-b")
    assert env.resize("vm", "m1.small").ok  # to node-b: the Migration names both nodes
    env.wait_phase("vm", "VERIFY_RESIZE")
    faults.stop(env.plane, faults.CONTROLLER_MANAGER)  # no garbage collection from here on
    env.kubectl("delete", "instance", "vm")
    [old] = env.migrations()  # its owner is gone, nobody collects it
    assert old["status"]["phase"] == "finished"

    env.create("vm")  # the same name, a new uid
    inst = env.wait_phase("vm", "ACTIVE", timeout=30)
    assert inst["metadata"]["uid"] != old["metadata"]["ownerReferences"][0]["uid"]
    assert not invariants.wait_converged(env, timeout=30).violations
    assert invariants.check(env, settled=True) == []
