"""The agent's decide(): which step a node runs for an instance, and what the sweep may do."""

from __future__ import annotations

import datetime

import pytest

from kubenova.api import common, instance, migration, names
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


def _said_missing(**extra: object) -> dict[str, object]:
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": names.GUEST_MISSING,
        "message": "deleted outside kubenova",
        "lastTransitionTime": m.T0.isoformat(),
    }
    return m.active(conditions=[ready], **extra)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (m.active(), duties.Act.NONE),  # the node's report first: the controller decides
        (_said_missing(), duties.Act.REDEFINE),
        (_said_missing(phase="SHUTOFF"), duties.Act.REDEFINE),
        (_said_missing(taskState="powering_on"), duties.Act.NONE),
        (_said_missing(node="node-b"), duties.Act.NONE),  # another node's instance
    ],
    ids=["not-said-yet", "said", "said-shutoff", "a-task-runs", "not-this-node"],
)
def test_a_deleted_guest_is_defined_again_only_once_the_controller_said_so(
    status: dict[str, object], expected: duties.Act
) -> None:
    assert duties.act(observed("node-a", m.inst(status=status), guest=None)) is expected


def test_a_deleted_guest_is_not_redefined_while_a_migration_runs() -> None:
    obs = observed("node-a", m.inst(status=_said_missing()), m.mig("migrating"), guest=None)
    assert duties.act(obs) is duties.Act.NONE


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


def _pre_copying(phase: str, **pre_copy: object) -> migration.Migration:
    base = m.mig(phase, dest="node-b")
    return base.model_copy(
        update={
            "spec": base.spec.model_copy(update={"pre_copy": True}),
            "status": base.status.model_copy(
                update={"pre_copy": migration.PreCopyStatus.model_validate(pre_copy)}
                if pre_copy
                else {}
            ),
        }
    )


@pytest.mark.parametrize(
    ("pre_copy", "source", "dest"),
    [
        pytest.param({}, [D.FREEZE_BASE], [], id="nothing-yet:the-source-freezes"),
        pytest.param({"base": "offered"}, [], [D.PRE_COPY], id="offered:the-dest-pulls"),
        pytest.param(
            {"base": "offered", "copy": "received"},
            [D.SET_ASIDE],
            [],
            id="received:the-source-powers-off",
        ),
        pytest.param(
            {"base": "offered", "copy": "abandoned"},
            [D.SET_ASIDE],
            [],
            id="abandoned:powered-off-all-the-same",
        ),
        pytest.param({"base": "skipped"}, [D.SET_ASIDE], [], id="skipped:as-without-pre-copy"),
    ],
)
def test_a_pre_copy_runs_pre_migrating_in_order(
    pre_copy: dict[str, str], source: list[D], dest: list[D]
) -> None:
    inst = m.inst(status=m.active())
    mig = _pre_copying("pre-migrating", **pre_copy)
    assert due(observed("node-a", inst, mig)) == source
    assert due(observed("node-b", inst, mig)) == dest


def test_after_the_power_off_a_pre_copy_follows_the_table() -> None:
    inst = m.inst(status=m.active())
    received = {"base": "offered", "overlay": True, "copy": "received"}
    assert due(observed("node-b", inst, _pre_copying("migrating", **received))) == [D.ACCEPT]
    assert due(observed("node-b", inst, _pre_copying("post-migrating", **received))) == [D.BUILD]


@pytest.mark.parametrize(
    ("phase", "pre_copy", "part", "served"),
    [
        ("pre-migrating", {}, migration.Part.DISK, False),  # not frozen: the guest writes it
        ("pre-migrating", {"base": "offered"}, migration.Part.DISK, True),
        ("pre-migrating", {"base": "offered"}, migration.Part.DELTA, False),  # still written
        ("pre-migrating", {"base": "skipped"}, migration.Part.DISK, False),
        ("migrating", {"base": "offered"}, migration.Part.DELTA, True),
        ("post-migrating", {"base": "offered"}, migration.Part.DELTA, True),
        ("finished", {"base": "offered"}, migration.Part.DISK, False),
    ],
)
def test_a_source_serves_each_part_only_while_it_cannot_change(
    phase: str, pre_copy: dict[str, str], part: migration.Part, served: bool
) -> None:
    mig = _pre_copying(phase, **pre_copy)
    assert stages.serves(mig, "node-a", part) is served
    assert not stages.serves(mig, "node-b", part)  # only the source serves


def test_the_instance_shows_the_pre_copy_while_the_base_travels() -> None:
    task = instance.TaskState
    assert stages.task(_pre_copying("pre-migrating")) is task.RESIZE_PREP
    assert stages.task(_pre_copying("pre-migrating", base="offered")) is task.RESIZE_PRECOPYING
    done = _pre_copying("pre-migrating", base="offered", copy="received")
    assert stages.task(done) is task.RESIZE_PREP
    assert stages.task(_pre_copying("migrating", base="offered")) is task.RESIZE_MIGRATING
