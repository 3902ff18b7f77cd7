"""The migration phase table: one writer per transition, Nova's order, final phases final."""

from __future__ import annotations

import re

import pytest

from kubenova.api import migration
from kubenova.api.migration import MigrationPhase as P
from kubenova.api.migration import Writer as Wr


@pytest.mark.parametrize(
    ("old", "new", "writer"),
    [
        (None, P.PRE_MIGRATING, Wr.CONTROLLER),
        (P.PRE_MIGRATING, P.MIGRATING, Wr.SOURCE),
        (P.MIGRATING, P.POST_MIGRATING, Wr.DEST),
        (P.POST_MIGRATING, P.FINISHED, Wr.DEST),
        (P.FINISHED, P.CONFIRMING, Wr.CONTROLLER),
        (P.CONFIRMING, P.CONFIRMED, Wr.SOURCE),
        (P.CONFIRMING, P.FINISHED, Wr.SOURCE),  # a failed confirm: back to verify, retried
        (P.CONFIRMING, P.ERROR, None),  # never: from finished on, the new copy stays
        (P.FINISHED, P.REVERTING, Wr.CONTROLLER),
        (P.REVERTING, P.REVERTED, Wr.SOURCE),
        (P.PRE_MIGRATING, P.FINISHED, None),
        (P.FINISHED, P.CONFIRMED, None),
        (P.CONFIRMED, P.REVERTING, None),
        (P.REVERTED, P.CONFIRMING, None),
        (P.ERROR, P.MIGRATING, None),
        (None, P.FINISHED, None),
    ],
    ids=lambda v: str(v) if v is not None else "none",
)
def test_writer_of(old: P | None, new: P, writer: Wr | None) -> None:
    assert migration.writer_of(old, new) == writer


def test_final_phases_are_final() -> None:
    assert not [t for t in migration.TRANSITIONS if t[0] in migration.FINAL_PHASES]


def test_every_working_phase_but_confirm_can_fail() -> None:
    working = set(P) - migration.FINAL_PHASES - {P.FINISHED, P.CONFIRMING}
    assert {old for old, new in migration.TRANSITIONS if new is P.ERROR} == working


def test_cel_rule_lists_exactly_the_table() -> None:
    rule = migration.PHASE_TRANSITION_RULE.rule
    for old, new in migration.TRANSITIONS:
        if old is not None:
            assert f"oldSelf.phase == '{old.value}'" in rule
            assert f"'{new.value}'" in rule


@pytest.mark.parametrize(
    ("instance", "uid", "sequence"),
    [
        ("demo", "7d8a1c5e-0000-4000-8000-000000000001", 1),
        ("a" * 253, "7d8a1c5e-0000-4000-8000-000000000001", 12),
        ("x." + "b" * 240 + ".c-d", "0123abcd-0000-4000-8000-000000000001", 300),
    ],
    ids=["short", "longest-name", "truncated-at-a-dot"],
)
def test_migration_names_are_valid_and_give_back_their_sequence(
    instance: str, uid: str, sequence: int
) -> None:
    name = migration.name_for(instance, uid, sequence)
    assert len(name) <= 253
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
    assert migration.sequence_of(name, uid) == sequence
    assert migration.sequence_of(name, "ffffffff" + uid[8:]) is None
    assert migration.sequence_of(f"{instance}-x7k2p", uid) is None  # a generateName
