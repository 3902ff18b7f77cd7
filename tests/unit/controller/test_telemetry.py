"""Resize timings from what a reconcile applied, and from the Migration's own phase times."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubenova.api import migration
from kubenova.controller import telemetry
from kubenova.lifecycle import plan
from tests import builders


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0


def sum_(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0


def applied(*reasons: str) -> plan.Plan:
    return plan.Plan(events=tuple(plan.Event(plan.EventType.NORMAL, r, "") for r in reasons))


def mig(created: float, *phases: tuple[str, float], **spec: Any) -> migration.Migration:
    body = builders.migration("demo-x1", **spec)
    at = datetime.datetime.fromtimestamp
    body["metadata"]["creationTimestamp"] = at(created, datetime.UTC).isoformat()
    body["status"] = {
        "phase": phases[-1][0] if phases else None,
        "phaseTransitions": [
            {"phase": p, "time": at(t, datetime.UTC).isoformat()} for p, t in phases
        ],
    }
    return migration.Migration.model_validate(body)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(telemetry, "_wall", lambda: now[0])
    return now


def test_resize_is_timed_from_the_spec_edit_the_controller_saw(clock: list[float]) -> None:
    t = telemetry.Telemetry()
    body = builders.instance("demo", flavor="m1.small")
    body["status"] = {"phase": "ACTIVE", "flavor": builders.snapshot()}
    t.saw_instance("default/demo", body)
    clock[0] = 1001.0
    t.saw_instance("default/demo", body)  # the same request seen again: first sighting counts
    before = sum_("kubenova_resize_duration_seconds", type="resize", outcome="verify_resize")
    clock[0] = 1004.0
    t.applied("default/demo", mig(1002.0, ("finished", 1003.5)), applied("VerifyResize"))
    after = sum_("kubenova_resize_duration_seconds", type="resize", outcome="verify_resize")
    assert after - before == pytest.approx(4.0)


def test_after_a_restart_the_migration_creation_time_stands_in(clock: list[float]) -> None:
    t = telemetry.Telemetry()
    labels = {"type": "migrate", "outcome": "verify_resize"}
    before = sum_("kubenova_resize_duration_seconds", **labels)
    clock[0] = 1010.0
    t.applied("default/demo", mig(1002.0, type="migration"), applied("VerifyResize"))
    assert sum_("kubenova_resize_duration_seconds", **labels) - before == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("reason", "entered", "outcome"),
    [("ResizeConfirmed", "confirming", "confirmed"), ("ResizeReverted", "reverting", "reverted")],
)
def test_confirm_and_revert_are_timed_from_the_migration_record(
    clock: list[float], reason: str, entered: str, outcome: str
) -> None:
    labels = {"type": "resize", "outcome": outcome}
    before = (
        count("kubenova_resize_finish_duration_seconds", **labels),
        sum_("kubenova_resize_finish_duration_seconds", **labels),
    )
    clock[0] = 1020.0
    record = mig(1000.0, ("finished", 1005.0), (entered, 1017.0))
    telemetry.Telemetry().applied("default/demo", record, applied(reason))
    assert count("kubenova_resize_finish_duration_seconds", **labels) == before[0] + 1
    assert sum_("kubenova_resize_finish_duration_seconds", **labels) - before[1] == pytest.approx(
        3.0
    )
