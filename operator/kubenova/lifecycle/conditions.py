"""Conditions as the Kubernetes API conventions define them, computed purely.

`lastTransitionTime` moves only when `status` changes; reason and message may change
without a transition (metav1.Condition semantics, as apimachinery's SetStatusCondition).
"""

from __future__ import annotations

import datetime

from kubenova.api import common, names


def find(conditions: list[common.Condition], type_: str) -> common.Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[common.Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status is names.ConditionStatus.TRUE


def put(
    conditions: list[common.Condition],
    *,
    type_: str,
    status: names.ConditionStatus,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int,
) -> list[common.Condition]:
    """A copy of `conditions` with one condition set."""
    old = find(conditions, type_)
    changed = old is None or old.status is not status
    new = common.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    if old == new:
        return conditions
    return [new if c.type == type_ else c for c in conditions] if old else [*conditions, new]
