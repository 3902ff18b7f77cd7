"""docs/state-machines.dot is what the transition tables draw today (no drift)."""

from __future__ import annotations

from hack import state_diagram

from kubenova.api import migration


def test_committed_dot_matches_the_transition_tables() -> None:
    assert state_diagram.DOT.read_text() == state_diagram.dot_source(), (
        "the phase machines changed: run `python -m hack.state_diagram` and commit docs/"
    )


def test_every_migration_transition_is_drawn_with_its_writer() -> None:
    text = state_diagram.dot_source()
    for (old, new), writer in migration.TRANSITIONS.items():
        source = f"migration:{old.value}" if old else "migration:start"
        assert f'"{source}" -> "migration:{new.value}" [label="{writer.value}"' in text
