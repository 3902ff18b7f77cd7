"""The controller's in-memory view: every kubenova object, placements, and claims per node.

Fed by kopf's watch events and by the answers to our own writes (newest resourceVersion
wins), so a decision never uses a view older than the claim it just persisted. Usage per
node is kept incrementally: an instance's claims are replaced whenever it or one of its
migrations changes, never recomputed over the fleet.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from typing import Any

from kubenova import clock as kubenova_clock
from kubenova.api import migration
from kubenova.kube import objects
from kubenova.scheduling import claims, index, scheduler
from kubenova.scheduling.amounts import NO_OVERHEAD, ZERO, Amount, Overhead

FINAL = {p.value for p in migration.FINAL_PHASES}


def _amount(snap: dict[str, Any] | None) -> Amount | None:
    if not snap:
        return None
    return Amount(int(snap["vcpus"]), int(snap["memoryMiB"]), int(snap["diskGiB"]))


def _overhead(report: dict[str, Any] | None) -> Overhead:
    if not report:
        return NO_OVERHEAD
    return Overhead(
        int(report.get("memoryMiB", 0)),
        int(report.get("memoryMiBPerVCPU", 0)),
        int(report.get("memoryMiBPerGiB", 0)),
    )


def is_active(body: dict[str, Any]) -> bool:
    return body.get("status", {}).get("phase") not in FINAL


class Store:
    def __init__(
        self,
        weigher: scheduler.Weigher = scheduler.Weigher.SPREAD,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        # node -> when this controller saw its heartbeat change (its node Lease, or a
        # status.agent report), on `clock`: up/down never compares another host's clock.
        self.heard: dict[str, float] = {}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "Instance": {},
            "Migration": {},
            "Hypervisor": {},
            "Flavor": {},
        }
        self.migrations_of: dict[str, set[str]] = {}
        self.placements: dict[str, claims.Placement] = {}
        self.used: dict[str, Amount] = {}
        self.counts: dict[str, int] = {}
        self.index = index.HostIndex(weigher)
        self.changed: set[str] = set()  # nodes whose usage changed since take_changed()

    # --- updates ---------------------------------------------------------------------------

    def put(self, kind: str, body: dict[str, Any]) -> bool:
        """Store `body` unless we already hold a newer version; True if stored."""
        bucket = self.objects[kind]
        key = objects.key(body)
        old = bucket.get(key)
        if not objects.newer(old, body):
            return False
        if kind == "Hypervisor" and _report_time(old) != _report_time(body):
            self.heard_from(key)  # a status.agent report is a heartbeat too
        bucket[key] = without_managed_fields(body)
        if kind == "Migration":
            self.migrations_of.setdefault(self.instance_key_of(body), set()).add(key)
            self._replace_placement(self.instance_key_of(body))
        elif kind == "Instance":
            self._replace_placement(key)
        elif kind == "Hypervisor":
            self._index_hypervisor(key, body)
        return True

    def heard_from(self, node: str) -> None:
        """A heartbeat of `node` changed just now (a Lease renew, a status.agent report)."""
        self.heard[node] = self.clock()
        self.index.seen(node, self.heard[node])

    def remove(self, kind: str, key: str) -> None:
        body = self.objects[kind].pop(key, None)
        if body is None:
            return
        if kind == "Migration":
            owner = self.instance_key_of(body)
            self.migrations_of.get(owner, set()).discard(key)
            self._replace_placement(owner)
        elif kind == "Instance":
            self._replace_placement(key)
        elif kind == "Hypervisor":
            self.index.remove(key)

    @staticmethod
    def instance_key_of(mig: dict[str, Any]) -> str:
        return f"{mig['metadata']['namespace']}/{mig['spec']['instanceName']}"

    # --- reads -----------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.objects[kind].get(key)

    def migration_for(self, inst: dict[str, Any]) -> dict[str, Any] | None:
        """The instance's active migration, else the one status.migrationRef names."""
        key = objects.key(inst)
        uid = inst["metadata"].get("uid")
        mine = [
            m
            for k in self.migrations_of.get(key, ())
            if (m := self.objects["Migration"].get(k)) is not None and _owned_by(m, uid)
        ]
        active = [m for m in mine if is_active(m)]
        if active:
            return min(active, key=lambda m: m["metadata"].get("creationTimestamp", ""))
        ref = inst.get("status", {}).get("migrationRef")
        return next((m for m in mine if m["metadata"]["name"] == ref), None)

    def last_migration(self, inst: dict[str, Any]) -> int:
        """The highest sequence among the instance's Migrations held here (0: none)."""
        uid = inst["metadata"].get("uid", "")
        found = (
            migration.sequence_of(k.split("/", 1)[1], uid)
            for k in self.migrations_of.get(objects.key(inst), ())
        )
        return max((n for n in found if n is not None), default=0)

    def last_heartbeat(self, name: str) -> datetime.datetime | None:
        """When this controller last heard from the node, on its own wall clock."""
        heard = self.heard.get(name)
        if heard is None:
            return None
        return kubenova_clock.now() - datetime.timedelta(seconds=self.clock() - heard)

    def is_up(self, name: str, service_down_time: float) -> bool:
        """Whether one node is up (a node never heard from is down)."""
        heard = self.heard.get(name)
        return heard is not None and self.clock() - heard <= service_down_time

    def overhead_mib(self, name: str) -> int:
        """Memory the node's driver spends beside its guests (status.usage.overheadMiB)."""
        return (self.index.used(name) - self.used.get(name, ZERO)).memory_mib

    def hosts(self, service_down_time: float) -> list[scheduler.Host]:
        return self.index.hosts(seen_after=self.clock() - service_down_time)

    def select(self, request: scheduler.Request, service_down_time: float) -> scheduler.Decision:
        return self.index.select(request, seen_after=self.clock() - service_down_time)

    def _index_hypervisor(self, name: str, hv: dict[str, Any]) -> None:
        """Hypervisors without an agent report yet are not schedulable (no capacity)."""
        report = hv.get("status", {}).get("agent")
        if not report:
            self.index.remove(name)
            return
        spec = hv.get("spec", {})
        ratios = spec.get("allocationRatios", {})
        host = scheduler.Host(
            name=name,
            capacity=_amount(report["capacity"]) or ZERO,
            cpu_ratio=float(ratios.get("cpu", 4.0)),
            memory_ratio=float(ratios.get("memory", 1.0)),
            disk_ratio=float(ratios.get("disk", 1.0)),
            labels=tuple(sorted(hv["metadata"].get("labels", {}).items())),
            disabled=bool(spec.get("disabled", False)),
            overhead=_overhead(report.get("guestOverhead")),
        )
        self.index.put(host, seen_at=self.heard.get(name, -math.inf))

    # --- claims ----------------------------------------------------------------------------

    def _placement_of(self, key: str) -> claims.Placement | None:
        inst = self.objects["Instance"].get(key)
        if inst is None:
            return None
        status = inst.get("status", {})
        placement = claims.Placement(
            owner=key, node=status.get("node"), flavor=_amount(status.get("flavor"))
        )
        mig = self.migration_for(inst)
        if (
            mig is not None
            and mig.get("status", {}).get("phase") == migration.MigrationPhase.REVERTED.value
            and mig["metadata"]["name"] == status.get("migrationRef")
        ):
            # Reverted, and the Instance's status not yet pointed back at the source (the
            # next write does it): the original on the source is the truth (lifecycle/
            # stages.py) and must stay claimed meanwhile; found by `make chaos`.
            spec = mig["spec"]
            return claims.Placement(
                owner=key, node=spec["sourceNode"], flavor=_amount(spec["oldFlavor"])
            )
        if mig is not None and is_active(mig):
            spec = mig["spec"]
            placement = claims.Placement(
                owner=key,
                node=placement.node,
                flavor=placement.flavor,
                source=spec["sourceNode"],
                dest=spec["destNode"],
                old_flavor=_amount(spec["oldFlavor"]),
                new_flavor=_amount(spec["newFlavor"]),
            )
        return placement

    def _replace_placement(self, key: str) -> None:
        old = self.placements.pop(key, None)
        touched = set()
        if old is not None:
            for claim in claims.claims_of(old):
                self.used[claim.node] = self.used.get(claim.node, ZERO) - claim.amount
                self.counts[claim.node] = self.counts.get(claim.node, 0) - 1
                touched.add(claim.node)
        new = self._placement_of(key)
        if new is not None:
            self.placements[key] = new
            for claim in claims.claims_of(new):
                self.used[claim.node] = self.used.get(claim.node, ZERO) + claim.amount
                self.counts[claim.node] = self.counts.get(claim.node, 0) + 1
                touched.add(claim.node)
        for node in touched:
            self.index.set_used(node, self.used[node], self.counts[node])
        self.changed |= touched

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    def give_back_changed(self, nodes: set[str]) -> None:
        """Nodes taken but not written (the write failed): the next pass writes them."""
        self.changed |= nodes


def without_managed_fields(body: dict[str, Any]) -> dict[str, Any]:
    """managedFields grow with every writer and are never read here: they were more than
    half of what the controller holds per Instance (8.4 of 14.3 KB once built)."""
    meta = body.get("metadata", {})
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _report_time(hv: dict[str, Any] | None) -> str | None:
    return ((hv or {}).get("status", {}).get("agent") or {}).get("heartbeatTime")


def _owned_by(mig: dict[str, Any], uid: str | None) -> bool:
    refs = mig["metadata"].get("ownerReferences", [])
    return not refs or any(r.get("uid") == uid for r in refs)
