"""The stage table: which copy is the truth, for every Migration phase and every failure."""

from __future__ import annotations

import pytest

from kubenova.api import instance, migration
from kubenova.lifecycle import stages
from tests import models as m

P = migration.MigrationPhase
C = stages.Copy
R = stages.Role
D = stages.Duty
T = m.T0


@pytest.mark.parametrize(
    ("phase", "truth"),
    [
        (None, C.ORIGINAL),
        (P.PRE_MIGRATING, C.ORIGINAL),
        (P.MIGRATING, C.ORIGINAL),
        (P.POST_MIGRATING, C.ORIGINAL),
        (P.FINISHED, C.NEW),
        (P.CONFIRMING, C.NEW),
        (P.CONFIRMED, C.NEW),
        (P.REVERTING, C.ORIGINAL),
        (P.REVERTED, C.ORIGINAL),
    ],
    ids=str,
)
def test_truth_of_every_phase(phase: P | None, truth: stages.Copy) -> None:
    assert stages.truth(m.mig(phase.value if phase else None)) is truth


@pytest.mark.parametrize(
    ("failed_in", "truth"),
    [
        (P.PRE_MIGRATING, C.ORIGINAL),
        (P.MIGRATING, C.ORIGINAL),
        (P.POST_MIGRATING, C.ORIGINAL),
        (P.REVERTING, C.ORIGINAL),  # the user chose the original
        (P.CONFIRMING, C.NEW),  # older records: a failed confirm never restores the original
    ],
    ids=str,
)
def test_truth_after_a_failure_depends_on_where_it_failed(failed_in: P, truth: stages.Copy) -> None:
    order = [P.PRE_MIGRATING, P.MIGRATING, P.POST_MIGRATING, P.FINISHED]
    path = order[: order.index(failed_in) + 1] if failed_in in order else [*order, failed_in]
    mig = m.mig("error", transitions=m.history(*path, P.ERROR))
    assert stages.failed_from(mig) is failed_in
    assert stages.truth(mig) is truth


def test_every_phase_has_a_row() -> None:
    assert set(stages.STAGES) == set(P) - {P.ERROR}


def test_a_failed_confirm_goes_back_to_verify_and_keeps_the_new_copy() -> None:
    work = stages.STAGES[P.CONFIRMING].work[R.SAME_HOST]
    assert (work.duty, work.on_failure) == (D.CONFIRM, P.FINISHED)
    mig = m.mig(
        "finished",
        transitions=m.history(
            P.PRE_MIGRATING, P.MIGRATING, P.POST_MIGRATING, P.FINISHED, P.CONFIRMING, P.FINISHED
        ),
    )
    assert stages.truth(mig) is C.NEW
    assert stages.confirm_failures(mig) == 1
    assert stages.node_of_truth(mig) == "node-a"


def test_no_undo_drops_the_new_copy_after_finished() -> None:
    """From `finished` on, only a revert (the user's choice) may undo anything."""
    for phase, row in stages.STAGES.items():
        if row.truth is C.NEW:
            assert D.RESTORE not in {w.duty for w in row.work.values()}, phase
            assert D.RELEASE not in {w.duty for w in row.work.values()}, phase


def test_the_source_restores_a_cross_node_revert_only_after_the_destination_released() -> None:
    row = stages.STAGES[P.REVERTING]
    assert row.work[R.SOURCE].guard is stages.Guard.DEST_RELEASED
    assert row.work[R.DEST].guard is stages.Guard.DEST_HOLDS


@pytest.mark.parametrize(
    ("phase", "shows"),
    [
        (P.PRE_MIGRATING, instance.Phase.RESIZE),
        (P.FINISHED, instance.Phase.VERIFY_RESIZE),
        (P.CONFIRMING, instance.Phase.VERIFY_RESIZE),
        (P.REVERTING, instance.Phase.REVERT_RESIZE),
    ],
    ids=str,
)
def test_what_the_instance_shows(phase: P, shows: instance.Phase) -> None:
    assert stages.STAGES[phase].shows is shows


def test_roles() -> None:
    assert stages.role(m.mig("finished"), "node-a") is R.SAME_HOST
    cross = m.mig("finished", dest="node-b")
    assert (stages.role(cross, "node-a"), stages.role(cross, "node-b")) == (R.SOURCE, R.DEST)
    assert stages.role(cross, "node-c") is None
