"""decide(): the Instance state machine, case by case, with fake time."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from kubenova.api import migration, names
from kubenova.lifecycle import instance as lc
from kubenova.lifecycle import plan, transitions
from kubenova.scheduling import scheduler
from tests import models as m

PLACED_A = scheduler.Decision(node="node-a", rejected={})
PLACED_B = scheduler.Decision(node="node-b", rejected={})
NO_HOST = scheduler.Decision(node=None, rejected={"short of memory": 2})


SMALL_SPEC = m.flavor_spec()


def obs(instance, *, migration=None, flavor=SMALL_SPEC, now=m.T0, **settings):  # type: ignore[no-untyped-def]
    return lc.Observed(
        instance=instance,
        migration=migration,
        flavor=flavor,
        now=now,
        settings=lc.Settings(**settings),
        hosts_up=frozenset({"node-a", "node-b"}),
    )


def reasons(p: plan.Plan) -> list[str]:
    return [e.reason for e in p.events]


# --- build ---------------------------------------------------------------------------------


def test_new_instance_asks_for_a_placement_of_its_flavor() -> None:
    p = lc.decide(obs(m.inst(finalizers=[]), flavor=m.flavor_spec(m.TINY)))
    assert p.need_placement is not None
    assert p.need_placement.flavor.memory_mib == 512
    assert p.need_placement.source is None


def test_placement_persists_claim_then_labels_for_the_agent() -> None:
    p = lc.decide(obs(m.inst(finalizers=[]), flavor=m.flavor_spec(m.TINY)), PLACED_A)
    assert p.status is not None
    assert p.status["node"] == "node-a"
    assert p.status["flavor"]["name"] == "m1.tiny"
    assert p.status["phase"] == "BUILD"
    assert p.main == {
        "metadata": {"labels": {names.LABEL_NODE: "node-a"}, "finalizers": [names.FINALIZER]}
    }
    assert reasons(p) == ["Scheduled"]


def test_build_with_unknown_flavor_reports_condition_and_event() -> None:
    p = lc.decide(obs(m.inst(flavor="m9.huge", finalizers=[]), flavor=None))
    assert p.need_placement is None
    assert p.status is not None
    cond = next(c for c in p.status["conditions"] if c["type"] == "FlavorValid")
    assert (cond["status"], cond["reason"]) == ("False", "FlavorNotFound")
    assert reasons(p) == ["FlavorNotFound"]


def test_build_without_host_stays_pending_and_retries() -> None:
    p = lc.decide(obs(m.inst(finalizers=[]), flavor=m.flavor_spec(m.TINY)), NO_HOST)
    assert p.status is not None
    assert "node" not in p.status
    assert reasons(p) == ["NoValidHost"]
    assert p.requeue_after == 5.0


def test_spawned_guest_makes_instance_active() -> None:
    i = m.inst(
        status={"phase": "BUILD", "node": "node-a", "flavor": m.TINY.to_wire(), "host": m.host()},
        labels={names.LABEL_NODE: "node-a"},
    )
    p = lc.decide(obs(i))
    assert p.status is not None
    assert p.status["phase"] == "ACTIVE"
    assert reasons(p) == ["Spawned"]


# --- resize --------------------------------------------------------------------------------


def steady(**kw):  # type: ignore[no-untyped-def]
    return m.inst(status=m.active(), labels={names.LABEL_NODE: "node-a"}, **kw)


def _merge(base: dict, patch: dict) -> dict:  # type: ignore[type-arg]
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def applied(i: lc.instance.Instance, p: plan.Plan) -> lc.instance.Instance:
    """The instance as the API server would store it after the plan's patches."""
    body = i.model_dump(mode="json", by_alias=True, exclude_none=True)
    body = _merge(body, p.main or {})
    body["status"] = _merge(body.get("status", {}), p.status or {})
    return lc.instance.Instance.model_validate(body)


def test_idle_active_instance_converges_to_no_writes() -> None:
    first = lc.decide(obs(steady(), flavor=m.flavor_spec(m.TINY)))
    assert first.status is not None  # fills in the Ready and FlavorValid conditions
    again = lc.decide(obs(applied(steady(), first), flavor=m.flavor_spec(m.TINY)))
    assert not again.writes
    assert again.need_placement is None


def test_flavor_edit_requests_placement_with_source_claim() -> None:
    p = lc.decide(obs(steady(flavor="m1.small")))
    assert p.need_placement is not None
    assert p.need_placement.source == "node-a"
    assert p.need_placement.source_flavor is not None
    assert p.need_placement.source_flavor.memory_mib == 512
    assert p.need_placement.allow_same_host


def test_resize_creates_the_work_order() -> None:
    p = lc.decide(obs(steady(flavor="m1.small")), PLACED_B)
    assert p.create_migration is not None
    assert p.create_migration.spec.source_node == "node-a"
    assert p.create_migration.spec.dest_node == "node-b"
    assert p.create_migration.spec.new_flavor.name == "m1.small"
    assert p.create_migration.labels[names.LABEL_DEST_NODE] == "node-b"
    assert p.status is not None
    assert (p.status["phase"], p.status["taskState"]) == ("RESIZE", "resize_prep")
    assert p.status["previousFlavor"]["name"] == "m1.tiny"


@pytest.mark.parametrize(
    ("count", "known", "sequence"),
    [(None, 0, 1), (3, 0, 4), (3, 5, 6), (7, 2, 8)],
    ids=["first", "from-status", "store-ahead-of-a-lost-status-write", "history-deleted"],
)
def test_the_work_order_name_is_the_next_sequence(
    count: int | None, known: int, sequence: int
) -> None:
    inst = steady(flavor="m1.small")
    inst = inst.model_copy(
        update={"status": inst.status.model_copy(update={"migration_count": count})}
    )
    base = obs(inst)
    p = lc.decide(dataclasses.replace(base, last_migration=known), PLACED_B)
    assert p.create_migration is not None
    name = p.create_migration.name
    assert migration.sequence_of(name, inst.metadata.uid) == sequence
    assert p.status is not None
    assert p.status["migrationCount"] == sequence


@pytest.mark.parametrize(
    ("flavor", "reason"),
    [
        (None, "FlavorNotFound"),
        (m.flavor_spec(disabled=True), "FlavorDisabled"),
        (m.flavor_spec(m.SMALL, disk_gib=1), None),  # same disk is fine
    ],
    ids=["unknown", "disabled", "same-disk"],
)
def test_resize_flavor_checks(flavor, reason) -> None:  # type: ignore[no-untyped-def]
    p = lc.decide(obs(steady(flavor="m1.small"), flavor=flavor))
    if reason is None:
        assert p.need_placement is not None
    else:
        assert p.need_placement is None
        assert reasons(p) == [reason]


def test_disk_shrink_is_refused_before_anything_moves() -> None:
    i = m.inst(flavor="m1.tiny", status=m.active(snap=m.SMALL), labels={names.LABEL_NODE: "node-a"})
    p = lc.decide(obs(i, flavor=m.flavor_spec(m.TINY)))
    assert p.need_placement is None
    assert p.create_migration is None
    assert reasons(p) == ["DiskShrink"]


def test_no_valid_host_keeps_instance_and_backs_off() -> None:
    p = lc.decide(obs(steady(flavor="m1.small")), NO_HOST)
    assert p.create_migration is None
    assert p.status is not None
    assert "phase" not in p.status
    cond = next(c for c in p.status["conditions"] if c["type"] == "ResizeFailed")
    assert (cond["status"], cond["reason"]) == ("True", "NoValidHost")
    assert "short of memory" in cond["message"]
    assert reasons(p) == ["NoValidHost"]


def test_backoff_grows_with_time_and_is_capped() -> None:
    failed = lc.decide(obs(steady(flavor="m1.small")), NO_HOST)
    assert failed.status is not None
    status = {**m.active(), "conditions": failed.status["conditions"]}
    i = m.inst(flavor="m1.small", status=status, labels={names.LABEL_NODE: "node-a"})
    later = [
        lc.decide(obs(i, now=m.T0 + datetime.timedelta(seconds=s)), NO_HOST).requeue_after
        for s in (1, 40, 10_000)
    ]
    assert later == [5.0, 40.0, 300.0]
    assert reasons(lc.decide(obs(i), NO_HOST)) == []  # no second event for the same failure


def test_setting_flavor_back_cancels_the_failed_resize() -> None:
    failed = lc.decide(obs(steady(flavor="m1.small")), NO_HOST)
    assert failed.status is not None
    i = m.inst(
        status={**m.active(), "conditions": failed.status["conditions"]},
        labels={names.LABEL_NODE: "node-a"},
    )
    p = lc.decide(obs(i, flavor=m.flavor_spec(m.TINY)))
    assert p.status is not None
    cond = next(c for c in p.status["conditions"] if c["type"] == "ResizeFailed")
    assert (cond["status"], cond["reason"]) == ("False", "Cancelled")


# --- the migration drives the instance -------------------------------------------------------


def resizing(dest: str = "node-a", **kw):  # type: ignore[no-untyped-def]
    status = m.active(
        phase="RESIZE",
        taskState="resize_prep",
        migrationRef="vm-abc",
        previousFlavor=m.TINY.to_wire(),
    )
    return m.inst(
        flavor="m1.small",
        status=status,
        labels={
            names.LABEL_NODE: "node-a",
            names.LABEL_SOURCE_NODE: "node-a",
            names.LABEL_DEST_NODE: dest,
        },
        **kw,
    )


def test_created_migration_is_started_by_the_controller() -> None:
    p = lc.decide(obs(resizing(), migration=m.mig(None)))
    assert p.migration_phase == plan.PhaseChange("vm-abc", None, lc.MPhase.PRE_MIGRATING)


@pytest.mark.parametrize(
    ("phase", "task"),
    [
        ("pre-migrating", "resize_prep"),
        ("migrating", "resize_migrating"),
        ("post-migrating", "resize_finish"),
    ],
)
def test_task_state_follows_the_migration(phase: str, task: str) -> None:
    p = lc.decide(obs(resizing(), migration=m.mig(phase)))
    assert (p.status or {}).get("taskState", "resize_prep") == task
    assert p.migration_phase is None


def test_a_step_shorter_than_a_second_gets_no_task_state_write() -> None:
    """Fast steps are superseded by the next phase; a slow one is shown once it lasts."""
    moved = m.mig("migrating", transitions=[("migrating", m.T0)])
    early = lc.decide(obs(resizing(), migration=moved, now=m.T0 + datetime.timedelta(seconds=0.3)))
    assert early.status is None
    assert early.requeue_after == pytest.approx(0.7)
    late = lc.decide(obs(resizing(), migration=moved, now=m.T0 + datetime.timedelta(seconds=1)))
    assert late.status is not None
    assert late.status["taskState"] == "resize_migrating"
    assert late.requeue_after is None


def test_finished_migration_means_verify_resize_on_the_destination() -> None:
    p = lc.decide(obs(resizing(dest="node-b"), migration=m.mig("finished", dest="node-b")))
    assert p.status is not None
    assert (p.status["phase"], p.status["node"]) == ("VERIFY_RESIZE", "node-b")
    assert p.status["flavor"]["name"] == "m1.small"
    # The node label moves when the migration is over; dest-node selects it meanwhile.
    assert p.main is None
    assert reasons(p) == ["VerifyResize"]


def verifying(dest: str = "node-a", **kw):  # type: ignore[no-untyped-def]
    status = m.active(
        phase="VERIFY_RESIZE",
        flavor=m.SMALL.to_wire(),
        migrationRef="vm-abc",
        previousFlavor=m.TINY.to_wire(),
    )
    return m.inst(
        flavor=kw.pop("flavor", "m1.small"),
        status=status,
        labels={
            names.LABEL_NODE: "node-a",
            names.LABEL_SOURCE_NODE: "node-a",
            names.LABEL_DEST_NODE: dest,
        },
        **kw,
    )


def test_confirm_annotation_moves_migration_to_confirming() -> None:
    p = lc.decide(
        obs(
            verifying(annotations={names.ANNOTATION_RESIZE: "confirm"}), migration=m.mig("finished")
        )
    )
    assert p.migration_phase == plan.PhaseChange("vm-abc", lc.MPhase.FINISHED, lc.MPhase.CONFIRMING)
    # One write for the confirm itself: the annotation goes when it is done, phase and task
    # stay as they are (a confirm shorter than a second shows no resize_confirming).
    assert p.main is None
    assert not {"phase", "taskState"} & set(p.status or {})
    assert reasons(p) == ["ConfirmResize"]


def test_confirmed_migration_drops_the_annotation_and_moves_labels_in_one_write() -> None:
    confirming = verifying(dest="node-b", annotations={names.ANNOTATION_RESIZE: "confirm"})
    during = lc.decide(obs(confirming, migration=m.mig("confirming", dest="node-b")))
    assert during.main is None
    p = lc.decide(obs(confirming, migration=m.mig("confirmed", dest="node-b")))
    assert p.main == {
        "metadata": {
            "labels": {
                names.LABEL_NODE: "node-b",
                names.LABEL_SOURCE_NODE: None,
                names.LABEL_DEST_NODE: None,
            },
            "annotations": {names.ANNOTATION_RESIZE: None},
        }
    }
    assert p.status is not None
    assert (p.status["phase"], p.status["node"]) == ("ACTIVE", "node-b")


def test_revert_annotation_restores_the_old_flavor_in_spec() -> None:
    p = lc.decide(
        obs(verifying(annotations={names.ANNOTATION_RESIZE: "revert"}), migration=m.mig("finished"))
    )
    assert p.migration_phase == plan.PhaseChange("vm-abc", lc.MPhase.FINISHED, lc.MPhase.REVERTING)
    assert p.main is not None
    assert p.main["spec"] == {"flavor": "m1.tiny"}
    assert p.status is not None
    assert p.status["phase"] == "REVERT_RESIZE"


def test_setting_spec_flavor_back_reverts() -> None:
    p = lc.decide(obs(verifying(flavor="m1.tiny"), migration=m.mig("finished")))
    assert p.migration_phase == plan.PhaseChange("vm-abc", lc.MPhase.FINISHED, lc.MPhase.REVERTING)


def test_unknown_action_value_is_refused_with_a_warning() -> None:
    p = lc.decide(
        obs(verifying(annotations={names.ANNOTATION_RESIZE: "yes"}), migration=m.mig("finished"))
    )
    assert p.migration_phase is None
    assert reasons(p) == ["InvalidAction"]


def test_auto_confirm_waits_for_the_window_then_confirms() -> None:
    done = m.mig("finished", transitions=[("finished", m.T0)])
    early = lc.decide(
        obs(
            verifying(),
            migration=done,
            now=m.T0 + datetime.timedelta(seconds=20),
            confirm_window_seconds=60,
        )
    )
    assert early.migration_phase is None
    assert early.requeue_after == 40.0
    late = lc.decide(
        obs(
            verifying(),
            migration=done,
            now=m.T0 + datetime.timedelta(seconds=60),
            confirm_window_seconds=60,
        )
    )
    assert late.migration_phase is not None
    assert late.migration_phase.new is lc.MPhase.CONFIRMING


def test_confirm_outside_verify_resize_is_refused() -> None:
    p = lc.decide(
        obs(steady(annotations={names.ANNOTATION_RESIZE: "confirm"}), flavor=m.flavor_spec(m.TINY))
    )
    assert reasons(p) == ["InvalidAction"]
    assert p.main == {"metadata": {"annotations": {names.ANNOTATION_RESIZE: None}}}


def test_confirmed_migration_releases_to_active_on_new_flavor() -> None:
    i = verifying()
    p = lc.decide(obs(i, migration=m.mig("confirmed")))
    assert p.status is not None
    assert p.status["phase"] == "ACTIVE"
    assert p.status["migrationRef"] is None
    assert p.status["previousFlavor"] is None
    assert p.main is not None
    assert p.main["metadata"]["labels"][names.LABEL_SOURCE_NODE] is None


def test_reverted_migration_returns_to_source_and_old_flavor() -> None:
    status = m.active(
        phase="REVERT_RESIZE",
        node="node-b",
        flavor=m.SMALL.to_wire(),
        migrationRef="vm-abc",
        previousFlavor=m.TINY.to_wire(),
    )
    i = m.inst(flavor="m1.tiny", status=status)
    p = lc.decide(obs(i, migration=m.mig("reverted", dest="node-b")))
    assert p.status is not None
    assert (p.status["phase"], p.status["node"], p.status["flavor"]["name"]) == (
        "ACTIVE",
        "node-a",
        "m1.tiny",
    )


def test_failed_migration_rolls_back_spec_and_reports() -> None:
    p = lc.decide(obs(resizing(), migration=m.mig("error", transitions=[("pre-migrating", m.T0)])))
    assert p.status is not None
    assert p.status["phase"] == "ERROR"
    assert p.main is not None
    assert p.main["spec"] == {"flavor": "m1.tiny"}
    assert reasons(p) == ["MigrationFailed"]


# --- migrate -------------------------------------------------------------------------------


def test_migrate_annotation_never_allows_the_same_host() -> None:
    p = lc.decide(
        obs(steady(annotations={names.ANNOTATION_MIGRATE: ""}), flavor=m.flavor_spec(m.TINY))
    )
    assert p.need_placement is not None
    assert not p.need_placement.allow_same_host
    assert p.need_placement.flavor.memory_mib == 512


def test_migrate_without_host_reports_once_and_drops_the_annotation() -> None:
    p = lc.decide(
        obs(steady(annotations={names.ANNOTATION_MIGRATE: ""}), flavor=m.flavor_spec(m.TINY)),
        NO_HOST,
    )
    assert p.create_migration is None
    assert reasons(p) == ["NoValidHost"]
    assert p.main == {"metadata": {"annotations": {names.ANNOTATION_MIGRATE: None}}}
    assert p.requeue_after is None


# --- delete --------------------------------------------------------------------------------


def test_delete_waits_for_every_involved_agent() -> None:
    i = m.inst(
        deleting=True,
        status=m.active(),
        labels={names.LABEL_SOURCE_NODE: "node-a", names.LABEL_DEST_NODE: "node-b"},
    )
    p = lc.decide(obs(i, migration=m.mig("migrating", dest="node-b")))
    assert not p.remove_finalizer
    released = {**m.active(), "released": {"node-a": m.T0.isoformat(), "node-b": m.T0.isoformat()}}
    done = lc.decide(
        obs(m.inst(deleting=True, status=released), migration=m.mig("migrating", dest="node-b"))
    )
    assert done.remove_finalizer


def test_delete_does_not_wait_for_a_down_node() -> None:
    i = m.inst(deleting=True, status=m.active(node="node-z"))
    assert lc.decide(obs(i)).remove_finalizer


def test_phase_table_refuses_illegal_jumps() -> None:
    with pytest.raises(transitions.IllegalTransitionError):
        transitions.check(lc.Phase.BUILD, lc.Phase.VERIFY_RESIZE)
