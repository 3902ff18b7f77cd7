"""What the controller reports: resize timings, migrations in flight, hypervisor usage.

Every transition is logged (one line per event posted). Timings come from what the
reconcile applied (its events name the transition) and from the Migration record's own
phase times, so a controller restarted mid-resize still times confirm/revert. The one
in-memory fact is when a request was first seen (a spec.flavor edit leaves no timestamp
of its own); after a restart the Migration's creation time stands in for it. Gauges are
read from the store at scrape time, never kept twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import registry
from prometheus_client.core import GaugeMetricFamily

from kubenova.api import migration, names
from kubenova.controller import store as store_mod
from kubenova.lifecycle import plan as plan_mod
from kubenova.observability import metrics

# Events get a logger of their own: `logger == "kubenova.events"` selects the story.
log = logging.getLogger("kubenova.events")
MPhase = migration.MigrationPhase
MIB = 1 << 20
GIB = 1 << 30
_TYPE = {migration.MigrationType.RESIZE: "resize", migration.MigrationType.MIGRATION: "migrate"}


def _wall() -> float:
    return time.time()


def _requests_move(body: dict[str, Any]) -> bool:
    """An ACTIVE/SHUTOFF instance whose spec asks for another flavor, or a migrate."""
    status = body.get("status", {})
    if status.get("phase") not in ("ACTIVE", "SHUTOFF"):
        return False
    applied = (status.get("flavor") or {}).get("name")
    wants_flavor = applied is not None and body.get("spec", {}).get("flavor") != applied
    return wants_flavor or names.ANNOTATION_MIGRATE in body["metadata"].get("annotations", {})


def _entered(mig: migration.Migration, phase: MPhase) -> datetime.datetime | None:
    return next((t.time for t in reversed(mig.status.phase_transitions) if t.phase is phase), None)


class Telemetry:
    def __init__(self) -> None:
        self.requested: dict[str, float] = {}  # instance key -> when the request was seen
        metrics.start_controller_series()

    def saw_instance(self, key: str, body: dict[str, Any] | None) -> None:
        """Every Instance event: note when a resize or migrate was first asked for."""
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.requested.pop(key, None)
        elif _requests_move(body):
            self.requested.setdefault(key, _wall())
        elif body.get("status", {}).get("phase") in ("ACTIVE", "SHUTOFF"):
            self.requested.pop(key, None)  # cancelled: spec.flavor set back

    def applied(self, key: str, mig: migration.Migration | None, plan: plan_mod.Plan) -> None:
        """A plan's writes landed: log the transitions its events announce (the logs tell
        the story `kubectl events` tells), and time them."""
        for event in plan.events:
            level = logging.WARNING if event.type is plan_mod.EventType.WARNING else logging.INFO
            log.log(level, "%s: %s", event.reason, event.message, extra={"reason": event.reason})
        if mig is None:
            return
        kind = _TYPE[mig.spec.type]
        now = _wall()
        for event in plan.events:
            if event.reason == "VerifyResize":
                self._to_verify(key, mig, kind, "verify_resize", now)
            elif event.reason in ("ResizeConfirmed", "ResizeReverted"):
                confirmed = event.reason == "ResizeConfirmed"
                began = _entered(mig, MPhase.CONFIRMING if confirmed else MPhase.REVERTING)
                outcome = "confirmed" if confirmed else "reverted"
                if began is not None:
                    metrics.RESIZE_FINISH_SECONDS.labels(type=kind, outcome=outcome).observe(
                        max(0.0, now - began.timestamp())
                    )
            elif event.reason == "MigrationFailed":
                began = _entered(mig, MPhase.CONFIRMING) or _entered(mig, MPhase.REVERTING)
                if began is None:
                    self._to_verify(key, mig, kind, "error", now)
                else:
                    metrics.RESIZE_FINISH_SECONDS.labels(type=kind, outcome="error").observe(
                        max(0.0, now - began.timestamp())
                    )

    def _to_verify(
        self, key: str, mig: migration.Migration, kind: str, outcome: str, now: float
    ) -> None:
        created = mig.metadata.creation_timestamp
        began = self.requested.pop(key, None) or (created.timestamp() if created else None)
        if began is not None:
            metrics.RESIZE_SECONDS.labels(type=kind, outcome=outcome).observe(max(0.0, now - began))


class StoreCollector(registry.Collector):
    """Gauges read from the controller's store at each scrape."""

    def __init__(self, store: store_mod.Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "kubenova_migrations_in_flight",
            "Migrations (resizes and cold migrates) not yet confirmed, reverted or failed.",
            labels=["type"],
        )
        counts = Counter(
            _TYPE[migration.MigrationType(m["spec"]["type"])]
            for m in self.store.objects["Migration"].values()
            if store_mod.is_active(m)
        )
        for kind in _TYPE.values():
            in_flight.add_metric([kind], counts.get(kind, 0))
        yield in_flight
        yield from self._hypervisors()

    def _hypervisors(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, what: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"kubenova_hypervisor_{name}", what, labels=["hypervisor"])

        families = {
            "vcpus": family("vcpus", "vCPUs the hypervisor reports (before allocation ratio)."),
            "vcpus_used": family("vcpus_used", "vCPUs claimed by instances and migrations."),
            "memory_bytes": family("memory_bytes", "Memory the hypervisor reports."),
            "memory_used_bytes": family("memory_used_bytes", "Memory claimed."),
            "disk_bytes": family("disk_bytes", "Instance disk space the hypervisor reports."),
            "disk_used_bytes": family("disk_used_bytes", "Disk claimed."),
            "instances": family("instances", "Claims on the hypervisor (instances, migrations)."),
            "up": family("up", "1 if the agent's heartbeat is within service_down_time."),
        }
        for name, hv in self.store.objects["Hypervisor"].items():
            report = hv.get("status", {}).get("agent") or {}
            cap = report.get("capacity") or {}
            used = self.store.used.get(name)
            values = {
                "vcpus": cap.get("vcpus", 0),
                "vcpus_used": used.vcpus if used else 0,
                "memory_bytes": cap.get("memoryMiB", 0) * MIB,
                "memory_used_bytes": (used.memory_mib if used else 0) * MIB,
                "disk_bytes": cap.get("diskGiB", 0) * GIB,
                "disk_used_bytes": (used.disk_gib if used else 0) * GIB,
                "instances": self.store.counts.get(name, 0),
                "up": 1 if hv.get("status", {}).get("state") == "up" else 0,
            }
            for key, value in values.items():
                families[key].add_metric([name], value)
        yield from families.values()
