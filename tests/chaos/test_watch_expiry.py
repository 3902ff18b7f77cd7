"""Watches that expire across a gap: the controller is paused (SIGSTOP) and its watches cut
while an Instance goes away and the Flavor of a pending resize is replaced; etcd is
compacted and the API server restarted, so a watch from before the gap gets 410 Gone. Once it
runs again it must relist: the deleted Instance's claim is freed (an Instance waiting for
that room is placed) and the pending resize uses the new Flavor."""

from __future__ import annotations

import json

import pytest
from hack import controlplane_faults as faults

from tests import builders
from tests.chaos import invariants, scenario
from tests.env import Env

pytestmark = pytest.mark.controlplane

# Small nodes, so that claims decide: node-a holds one m1.medium and nothing else; node-b
# holds m1.tiny and grows to 2048 MiB at most.
NODE_A = "vcpus=4,memoryMiB=4096,diskGiB=100"
NODE_B = "vcpus=4,memoryMiB=2048,diskGiB=100"
GROW_BEFORE, GROW_AFTER = 3072, 1024  # chaos.grow's memory before and after the gap


def grow_flavor(memory: int) -> dict[str, object]:
    return builders.flavor("chaos.grow", vcpus=1, memoryMiB=memory, diskGiB=20)


def test_a_controller_relists_after_its_watches_expire_in_a_gap(env: Env) -> None:
    # A long lease: the pause must not cost the controller its leadership (it would exit,
    # and a restart lists afresh: the relist after 410 would go untested).
    controller = env.start_controller("--lease-duration-seconds=60")
    env.start_agent("node-a", NODE_A)
    env.start_agent("node-b", NODE_B)
    env.kubectl.apply(grow_flavor(GROW_BEFORE))
    env.create("hog", "m1.medium")
    hog = env.wait_phase("hog", "ACTIVE")
    assert hog["status"]["node"] == "node-a"
    env.create("grower")
    assert env.wait_phase("grower", "ACTIVE")["status"]["node"] == "node-b"
    env.create("waiting", "m1.small")  # fits nowhere while hog holds node-a
    assert env.resize("grower", "chaos.grow").ok  # 3072 MiB: fits nowhere either
    converged = invariants.wait_converged(env, timeout=30)
    assert not converged.violations
    assert env.phase("waiting") == "BUILD"
    assert env.instance("grower")["status"]["flavor"]["name"] == "m1.tiny"

    with invariants.sampling(env) as seen:
        controller.pause()
        resumed_at = len(controller.log.read_bytes())
        # Cut every watch first: a paused process's sockets still take in what the server
        # sends (the kernel buffers it), so without this the gap's events would wait there.
        faults.restart_apiserver(env.plane)
        # hog goes while nobody watches: node-a's agent releases it, and its finalizer is
        # taken off by hand, as the controller would have, so the Instance is gone before
        # the controller looks again.
        env.kubectl("delete", "instance", "hog", "--wait=false")
        env.wait_for(lambda: hog["status"]["uuid"] not in env.guests("node-a"), what="hog released")
        env.kubectl(
            "patch", "instance", "hog", "--type=json",
            "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
        )  # fmt: skip
        env.wait_for(lambda: not env.kubectl.run("get", "instance", "hog").ok, what="hog gone")
        # The pending resize's Flavor is replaced by a smaller one of the same name.
        env.kubectl("delete", "flavor", "chaos.grow")
        assert env.kubectl.apply(grow_flavor(GROW_AFTER)).ok
        faults.expire_resource_versions(env.plane)
        controller.resume()

        env.wait_phase("waiting", "ACTIVE")
        mig = scenario.wait_migration(env, "grower", ("finished",))
        env.wait_phase("grower", "VERIFY_RESIZE")
        env.annotate("grower", "resize", "confirm")
        env.wait_phase("grower", "ACTIVE")
        converged = invariants.wait_converged(env, timeout=30)
    assert not converged.violations
    assert seen.report() == []
    assert invariants.check(env, settled=True) == []

    assert env.instance("waiting")["status"]["node"] == "node-a"  # hog's room, freed
    assert mig["spec"]["newFlavor"]["memoryMiB"] == GROW_AFTER  # the Flavor after the gap
    grower = env.instance("grower")
    assert grower["status"]["flavor"] == {**mig["spec"]["newFlavor"]}
    # The controller's own record of the gap: every watch from before it ended, each in a
    # relist (a watch resumed from its old resourceVersion met 410 Gone).
    after = controller.log.read_bytes()[resumed_at:].decode(errors="replace")
    for kind in ("Instance", "Migration", "Flavor", "Hypervisor"):
        assert f"{kind} watch (all) " in after, after[-3000:]
    assert "expired (410 Gone); relisting" in after, after[-3000:]
    # node-a's usage holds what is placed there now (waiting, maybe grower), never hog.
    placed = [env.instance(n)["status"] for n in ("waiting", "grower")]
    here = [st["flavor"]["memoryMiB"] for st in placed if st["node"] == "node-a"]
    usage = env.usage("node-a")
    assert (usage["memoryMiB"], usage["instances"]) == (sum(here), len(here))
