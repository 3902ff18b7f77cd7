"""What a reconcile decided to do: data, applied in a fixed, crash-safe order by the glue.

Order of application (each step is persisted before the next, so a crash between steps
leaves a state the next reconcile recognises and finishes):
    create_migration -> migration_phase -> status -> main (spec + metadata) -> events
    -> remove_finalizer.
The claim a placement makes is persisted by the first write that names the node.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from kubenova.api import migration as migration_api
from kubenova.scheduling import scheduler


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclasses.dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class MigrationOrder:
    """A Migration to create (the work order), with the name the glue should give it."""

    name: str
    spec: migration_api.MigrationSpec
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True)
class PhaseChange:
    """Compare-and-swap of a migration's phase: only if it is still `old`."""

    name: str
    old: migration_api.MigrationPhase | None
    new: migration_api.MigrationPhase
    status: dict[str, Any] | None = None  # further status fields, in the same write


@dataclasses.dataclass(frozen=True)
class Plan:
    # Ask the scheduler first, then decide again with its answer.
    need_placement: scheduler.Request | None = None
    create_migration: MigrationOrder | None = None
    migration_phase: PhaseChange | None = None
    status: dict[str, Any] | None = None  # merge patch for /status
    main: dict[str, Any] | None = None  # merge patch for the object (spec, metadata)
    events: tuple[Event, ...] = ()
    remove_finalizer: bool = False
    requeue_after: float | None = None  # seconds; None: wait for the next change

    @property
    def writes(self) -> bool:
        return any(
            (
                self.create_migration,
                self.migration_phase,
                self.status,
                self.main,
                self.remove_finalizer,
            )
        )


NOTHING = Plan()
