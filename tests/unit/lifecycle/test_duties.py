"""The agent's decide(): which step a node runs for an instance, and what the sweep may do."""

from __future__ import annotations

import datetime

import pytest

from kubenova.api import common, instance, migration
from kubenova.lifecycle import duties, stages
from tests import models as m

P = migration.MigrationPhase
D = stages.Duty
Power = instance.PowerState
T = m.T0


def observed(
    node: str,
    inst: instance.Instance | None,
    *migs: migration.Migration,
    guest: Power | None = None,
) -> duties.Observed:
    return duties.Observed(node=node, instance=inst, migrations=migs, guest=guest)


def due(obs: duties.Observed) -> list[D]:
    return [t.work.duty for t in duties.tasks(obs)]


@pytest.mark.parametrize(
    ("phase", "dest", "node", "expected"),
    [
        ("pre-migrating", "node-a", "node-a", [D.SET_ASIDE]),
        ("migrating", "node-a", "node-a", [D.ACCEPT]),
        ("post-migrating", "node-a", "node-a", [D.BUILD]),
        ("finished", "node-a", "node-a", []),
        ("confirming", "node-a", "node-a", [D.CONFIRM]),
        ("reverting", "node-a", "node-a", [D.RESTORE]),
        ("pre-migrating", "node-b", "node-b", []),
        ("migrating", "node-b", "node-a", []),
        ("post-migrating", "node-b", "node-b", [D.BUILD]),
        ("confirming", "node-b", "node-b", []),
        ("reverting", "node-b", "node-b", [D.RELEASE]),
        ("reverting", "node-b", "node-a", []),  # not before the destination released
    ],
)
def test_steps_by_phase_and_node(phase: str, dest: str, node: str, expected: list[D]) -> None:
    inst = m.inst(status=m.active())
    assert due(observed(node, inst, m.mig(phase, dest=dest))) == expected


def test_a_failed_same_host_resize_restores_the_original_while_the_instance_is_in_error() -> None:
    failed = m.mig(
        "error", transitions=m.history(P.PRE_MIGRATING, P.MIGRATING, P.POST_MIGRATING, P.ERROR)
    )
    erring = m.inst(status=m.active(phase="ERROR"))
    assert due(observed("node-a", erring, failed)) == [D.RESTORE]
    settled = m.inst(status=m.active())
    assert due(observed("node-a", settled, failed)) == []  # once ACTIVE again: never again


def test_a_migration_that_failed_after_finished_undoes_nothing() -> None:
    """The bug this table fixes: a failed same-host confirm reverted to the old disk."""
    failed = m.mig(
        "error",
        transitions=m.history(
            P.PRE_MIGRATING, P.MIGRATING, P.POST_MIGRATING, P.FINISHED, P.CONFIRMING, P.ERROR
        ),
    )
    erring = m.inst(status=m.active(phase="ERROR"))
    assert due(observed("node-a", erring, failed)) == []


def test_only_the_latest_failure_is_restored() -> None:
    old = m.mig("error", transitions=m.history(P.PRE_MIGRATING, P.ERROR))
    newer = m.mig(
        "error",
        transitions=[
            (p, t + datetime.timedelta(hours=1))
            for p, t in m.history(P.PRE_MIGRATING, P.MIGRATING, P.ERROR)
        ],
    )
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"uid": "b"})})
    erring = m.inst(status=m.active(phase="ERROR"))
    tasks = duties.tasks(observed("node-a", erring, newer, old))
    assert [(t.migration.metadata.uid, t.work.duty) for t in tasks] == [("b", D.RESTORE)]


def test_a_destination_releases_what_it_built_after_a_failure_without_the_instance() -> None:
    failed = m.mig(
        "error",
        dest="node-b",
        transitions=m.history(P.PRE_MIGRATING, P.MIGRATING, P.POST_MIGRATING, P.ERROR),
    )
    assert due(observed("node-b", None, failed)) == [D.RELEASE]


def test_a_work_order_for_another_instance_of_the_same_name_is_ignored() -> None:
    mig = m.mig("pre-migrating")
    other = mig.model_copy(
        update={"spec": mig.spec.model_copy(update={"instance_uuid": "0" * 8 + m.UID[8:]})}
    )
    assert due(observed("node-a", m.inst(status=m.active()), other)) == []


def test_a_work_order_owned_by_another_instance_uid_is_ignored() -> None:
    """Same name, same instanceUuid field (a status.uuid carried over), another owner."""
    mig = m.mig("pre-migrating")
    owner = common.OwnerReference(kind="Instance", name=mig.spec.instance_name, uid="gone")
    other = mig.model_copy(
        update={"metadata": mig.metadata.model_copy(update={"owner_references": [owner]})}
    )
    assert due(observed("node-a", m.inst(status=m.active()), mig)) != []
    assert due(observed("node-a", m.inst(status=m.active()), other)) == []


@pytest.mark.parametrize(
    ("phase", "wanted", "guest", "expected"),
    [
        ("SHUTOFF", "Running", Power.STOPPED, duties.Act.POWER_ON),
        ("ACTIVE", "Running", Power.STOPPED, duties.Act.NONE),  # stopped by itself: not restarted
        ("ACTIVE", "Stopped", Power.RUNNING, duties.Act.POWER_OFF),
        ("ACTIVE", "Running", Power.RUNNING, duties.Act.NONE),
        ("BUILD", "Running", None, duties.Act.SPAWN),
    ],
)
def test_power_and_spawn(
    phase: str, wanted: str, guest: Power | None, expected: duties.Act
) -> None:
    inst = m.inst(status=m.active(phase=phase), power=wanted)
    assert duties.act(observed("node-a", inst, guest=guest)) is expected


def test_no_power_action_while_a_migration_runs() -> None:
    inst = m.inst(status=m.active(phase="SHUTOFF"))
    obs = observed("node-a", inst, m.mig("migrating"), guest=Power.STOPPED)
    assert duties.act(obs) is duties.Act.NONE


V = duties.Verdict


@pytest.mark.parametrize(
    ("selected", "exists", "first", "now", "verdict"),
    [
        (True, False, None, 0.0, V.KEEP),
        (False, True, 10.0, 1000.0, V.KEEP),  # labels stripped: its Instance still exists
        (False, False, None, 0.0, V.SUSPECT),  # first sweep that finds it gone
        (False, False, 0.0, 299.0, V.SUSPECT),  # not yet minutes apart
        (False, False, 0.0, 300.0, V.QUARANTINE),
    ],
    ids=["selected", "exists-unlabelled", "first-absent", "too-soon", "absent-twice"],
)
def test_orphan_verdict(
    selected: bool, exists: bool, first: float | None, now: float, verdict: duties.Verdict
) -> None:
    assert (
        duties.orphan_verdict(
            selected=selected, exists=exists, first_absent=first, now=now, grace=300.0
        )
        is verdict
    )


def test_a_predecessors_live_migration_does_not_block_the_spawn_of_a_new_instance() -> None:
    """Same name, another uid: the old Instance's Migration (not yet garbage-collected)."""
    old = m.mig("finished")
    owner = common.OwnerReference(kind="Instance", name=old.spec.instance_name, uid="gone")
    old = old.model_copy(
        update={"metadata": old.metadata.model_copy(update={"owner_references": [owner]})}
    )
    building = m.inst(status={**m.active(), "phase": "BUILD"})
    assert duties.act(observed("node-a", building, old)) is duties.Act.SPAWN
