"""A plan under construction: collects status, spec and metadata changes against what is.

Only real changes are kept, so a reconcile of an object that is already right writes
nothing (no-op patches would cost API writes and wake every watcher).
"""

from __future__ import annotations

import datetime
from typing import Any

from kubenova.api import common, instance, names
from kubenova.lifecycle import conditions, plan
from kubenova.lifecycle import transitions as phases

Phase = instance.Phase
TaskState = instance.TaskState


class Draft:
    def __init__(self, inst: instance.Instance, now: datetime.datetime) -> None:
        self.inst = inst
        self.now = now
        self.status: dict[str, Any] = {}
        self.labels: dict[str, str | None] = {}
        self.annotations: dict[str, str | None] = {}
        self.spec: dict[str, Any] = {}
        self.finalizers: list[str] | None = None
        self.events: list[plan.Event] = []
        self.conditions = list(inst.status.conditions)

    # --- status ----------------------------------------------------------------------------

    def phase(self, phase: Phase, task: TaskState = TaskState.NONE) -> None:
        current = self.inst.status.phase
        if current is not phase:
            phases.check(current, phase)
            self.status["phase"] = phase.value
        if (self.inst.status.task_state or TaskState.NONE) is not task:
            self.status["taskState"] = task.value

    def field(self, key: str, value: common.Model | str | int | None) -> None:
        """Set one status field (wire name) if it differs; None clears it."""
        current = getattr(self.inst.status, _snake(key))
        if current == value:
            return
        self.status[key] = value.to_wire() if isinstance(value, common.Model) else value

    def condition(
        self, type_: names.ConditionType, status: names.ConditionStatus, reason: str, message: str
    ) -> bool:
        """Set a condition; True if its status, reason or message changed."""
        updated = conditions.put(
            self.conditions,
            type_=type_.value,
            status=status,
            reason=reason,
            message=message,
            now=self.now,
            generation=self.inst.metadata.generation,
        )
        if updated is self.conditions:
            return False
        self.conditions = updated
        self.status["conditions"] = [c.to_wire() for c in updated]
        return True

    # --- object ----------------------------------------------------------------------------

    def label(self, key: str, value: str | None) -> None:
        if self.inst.metadata.labels.get(key) != value:
            self.labels[key] = value

    def drop_annotation(self, key: str) -> None:
        if key in self.inst.metadata.annotations:
            self.annotations[key] = None

    def ensure_finalizer(self) -> None:
        if names.FINALIZER not in self.inst.metadata.finalizers:
            self.finalizers = [*self.inst.metadata.finalizers, names.FINALIZER]

    def set_flavor(self, name: str) -> None:
        if self.inst.spec.flavor != name:
            self.spec["flavor"] = name

    def set_power(self, state: instance.PowerState) -> None:
        if self.inst.spec.power_state is not state:
            self.spec["powerState"] = state.value

    def event(self, type_: plan.EventType, reason: str, message: str) -> None:
        self.events.append(plan.Event(type_, reason, message))

    # --- result ----------------------------------------------------------------------------

    def main_patch(self) -> dict[str, Any] | None:
        metadata: dict[str, Any] = {}
        if self.labels:
            metadata["labels"] = self.labels
        if self.annotations:
            metadata["annotations"] = self.annotations
        if self.finalizers is not None:
            metadata["finalizers"] = self.finalizers
        patch: dict[str, Any] = {}
        if metadata:
            patch["metadata"] = metadata
        if self.spec:
            patch["spec"] = self.spec
        return patch or None

    def plan(self, **extra: Any) -> plan.Plan:
        if self.status:
            self.status.setdefault("observedGeneration", self.inst.metadata.generation)
        return plan.Plan(
            status=self.status or None,
            main=self.main_patch(),
            events=tuple(self.events),
            **extra,
        )


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
