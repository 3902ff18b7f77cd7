"""The migration phase table: one writer per transition, Nova's order, no way out of a final phase."""

from __future__ import annotations

import pytest

from kubenova.api import migration
from kubenova.api.migration import MigrationPhase as P
from kubenova.api.migration import Writer as W


@pytest.mark.parametrize(
    ("old", "new", "writer"),
    [
        (None, P.PRE_MIGRATING, W.CONTROLLER),
        (P.PRE_MIGRATING, P.MIGRATING, W.SOURCE),
        (P.MIGRATING, P.POST_MIGRATING, W.DEST),
        (P.POST_MIGRATING, P.FINISHED, W.DEST),
        (P.FINISHED, P.CONFIRMING, W.CONTROLLER),
        (P.CONFIRMING, P.CONFIRMED, W.SOURCE),
        (P.FINISHED, P.REVERTING, W.CONTROLLER),
        (P.REVERTING, P.REVERTED, W.SOURCE),
        (P.PRE_MIGRATING, P.FINISHED, None),
        (P.FINISHED, P.CONFIRMED, None),
        (P.CONFIRMED, P.REVERTING, None),
        (P.REVERTED, P.CONFIRMING, None),
        (P.ERROR, P.MIGRATING, None),
        (None, P.FINISHED, None),
    ],
    ids=lambda v: str(v) if v is not None else "none",
)
def test_writer_of(old: P | None, new: P, writer: W | None) -> None:
    assert migration.writer_of(old, new) == writer


def test_final_phases_are_final() -> None:
    assert not [t for t in migration.TRANSITIONS if t[0] in migration.FINAL_PHASES]


def test_every_working_phase_can_fail() -> None:
    working = set(P) - migration.FINAL_PHASES - {P.FINISHED}
    assert {old for old, new in migration.TRANSITIONS if new is P.ERROR} == working


def test_cel_rule_lists_exactly_the_table() -> None:
    rule = migration.PHASE_TRANSITION_RULE.rule
    for old, new in migration.TRANSITIONS:
        if old is not None:
            assert f"oldSelf.phase == '{old.value}'" in rule
            assert f"'{new.value}'" in rule
