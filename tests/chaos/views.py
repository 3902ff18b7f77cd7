"""What the invariant checker reads, parsed once from API objects and fake hypervisor state
files into small views of its own: the checker recomputes claims by design.md's rules
rather than with the controller's code, so a bug there cannot hide itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

FINAL = frozenset({"confirmed", "reverted", "error"})
ACTIONS = ("compute.kubenova.io/resize", "compute.kubenova.io/migrate")
# Why an instance may rest with spec.flavor unapplied: it waits for a host or a valid flavor.
WAITING = frozenset({"NoValidHost", "FlavorNotFound", "FlavorDisabled", "DiskShrink"})
RATIO_DEFAULTS = {"cpu": 4.0, "memory": 1.0, "disk": 1.0}  # api/hypervisor.py, Nova's


@dataclasses.dataclass(frozen=True, order=True)
class Amount:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.vcpus + other.vcpus,
            self.memory_mib + other.memory_mib,
            self.disk_gib + other.disk_gib,
        )

    def peak(self, other: Amount) -> Amount:
        return Amount(
            max(self.vcpus, other.vcpus),
            max(self.memory_mib, other.memory_mib),
            max(self.disk_gib, other.disk_gib),
        )

    def fits_in(self, limit: Amount) -> bool:
        return (
            self.vcpus <= limit.vcpus
            and self.memory_mib <= limit.memory_mib
            and self.disk_gib <= limit.disk_gib
        )

    @classmethod
    def of(cls, sizes: dict[str, Any] | None) -> Amount:
        """From a flavor snapshot or usage (camelCase) or a fake disk record (snake_case)."""
        if not sizes:
            return cls()
        return cls(
            int(sizes.get("vcpus", 0)),
            int(sizes.get("memoryMiB", sizes.get("memory_mib", 0))),
            int(sizes.get("diskGiB", sizes.get("disk_gib", 0))),
        )


ZERO = Amount()


@dataclasses.dataclass(frozen=True)
class Instance:
    key: str  # namespace/name
    uid: str
    uuid: str
    phase: str
    task: str
    node: str
    flavor: str  # spec.flavor
    applied: str  # status.flavor.name
    sizes: Amount | None  # status.flavor
    migration_ref: str  # namespace/name of the Migration status.migrationRef names, or ""
    deleting: bool
    actions: tuple[str, ...]  # pending action annotations
    reasons: dict[str, tuple[str, str]]  # condition type -> (status, reason)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Instance:
        meta, status = body["metadata"], body.get("status", {})
        applied = status.get("flavor")
        ns = meta.get("namespace", "default")
        ref = status.get("migrationRef")
        return cls(
            key=f"{ns}/{meta['name']}",
            uid=meta.get("uid", ""),
            uuid=status.get("uuid") or meta.get("uid", ""),
            phase=status.get("phase") or "",
            task=status.get("taskState") or "",
            node=status.get("node") or "",
            flavor=body.get("spec", {}).get("flavor", ""),
            applied=applied["name"] if applied else "",
            sizes=Amount.of(applied) if applied else None,
            migration_ref=f"{ns}/{ref}" if ref else "",
            deleting=bool(meta.get("deletionTimestamp")),
            actions=tuple(a for a in ACTIONS if a in meta.get("annotations", {})),
            reasons={
                c["type"]: (c.get("status", ""), c.get("reason", ""))
                for c in status.get("conditions", [])
            },
        )

    def waits(self) -> bool:
        """Resting with spec.flavor unapplied, and a condition that says why."""
        return any(
            reason in WAITING and status in ("True", "False")
            for status, reason in self.reasons.values()
        )


@dataclasses.dataclass(frozen=True)
class Migration:
    key: str
    uid: str
    owner: str  # the owning Instance's uid
    instance: str  # namespace/name
    phase: str
    source: str
    dest: str
    old: Amount
    new: Amount
    left_behind: bool  # confirmed without its source, which has not cleaned up yet
    created: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Migration:
        meta, spec, status = body["metadata"], body["spec"], body.get("status", {})
        ns = meta.get("namespace", "default")
        owners = [r.get("uid", "") for r in meta.get("ownerReferences", [])]
        return cls(
            key=f"{ns}/{meta['name']}",
            uid=meta.get("uid", ""),
            owner=owners[0] if owners else "",
            instance=f"{ns}/{spec['instanceName']}",
            phase=status.get("phase") or "",
            source=spec["sourceNode"],
            dest=spec["destNode"],
            old=Amount.of(spec["oldFlavor"]),
            new=Amount.of(spec["newFlavor"]),
            left_behind=bool(status.get("sourceDownSince")) and not status.get("sourceCleaned"),
            created=meta.get("creationTimestamp", ""),
        )

    @property
    def live(self) -> bool:
        return self.phase not in FINAL

    def landed(self) -> set[str]:
        """Where the guest runs once this migration is over (either node after an error:
        it depends on the step that failed)."""
        if self.phase == "confirmed":
            return {self.dest}
        if self.phase == "reverted":
            return {self.source}
        return {self.source, self.dest}

    def names(self, node: str) -> bool:
        return node in (self.source, self.dest)


@dataclasses.dataclass(frozen=True)
class Hypervisor:
    name: str
    limit: Amount | None  # capacity x allocation ratio, rounded down; None before a report
    usage: tuple[Amount, int] | None  # status.usage and its instance count
    state: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Hypervisor:
        status = body.get("status", {})
        report = status.get("agent")
        ratios = {**RATIO_DEFAULTS, **body.get("spec", {}).get("allocationRatios", {})}
        limit = None
        if report:
            cap = Amount.of(report["capacity"])
            limit = Amount(
                int(cap.vcpus * float(ratios["cpu"])),
                int(cap.memory_mib * float(ratios["memory"])),
                int(cap.disk_gib * float(ratios["disk"])),
            )
        usage = status.get("usage")
        return cls(
            name=body["metadata"]["name"],
            limit=limit,
            usage=(Amount.of(usage), int(usage.get("instances", 0))) if usage else None,
            state=status.get("state") or "",
        )


@dataclasses.dataclass(frozen=True)
class Guest:
    """One record of a fake hypervisor's state file."""

    node: str
    uuid: str
    current: Amount | None  # the defined guest
    running: bool
    revert_point: Amount | None  # `<uuid>_resize`
    aside_for: str  # uid of the Migration that set the revert point aside
    received_for: str  # uid of the Migration this node received the guest for

    @classmethod
    def of(cls, node: str, uuid: str, record: dict[str, Any]) -> Guest:
        current, aside = record.get("current"), record.get("resize")
        return cls(
            node=node,
            uuid=uuid,
            current=Amount.of(current) if current else None,
            running=current is not None and record.get("power") == "Running",
            revert_point=Amount.of(aside) if aside else None,
            aside_for=record.get("aside_for", ""),
            received_for=record.get("received_for", ""),
        )

    @property
    def held(self) -> Amount:
        return (self.current or ZERO).peak(self.revert_point or ZERO)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One look at the cluster: the API, then the state files, then the API again (each
    read of the API at one revision: invariants.read_api)."""

    instances: tuple[Instance, ...]
    migrations: tuple[Migration, ...]
    hypervisors: tuple[Hypervisor, ...]
    guests: tuple[Guest, ...] = ()
    flavors: dict[str, Amount] = dataclasses.field(default_factory=dict)
    # The second read (after the state files): Instances and Migrations only.
    later_instances: tuple[Instance, ...] = ()
    later_migrations: tuple[Migration, ...] = ()

    @classmethod
    def of(
        cls,
        items: Iterable[dict[str, Any]],
        guests: dict[str, dict[str, Any]] | None = None,
        later: Iterable[dict[str, Any]] = (),
    ) -> Snapshot:
        """From API objects (Instances, Migrations, Hypervisors, Flavors) and state files
        by node."""
        first, second = _by_kind(items), _by_kind(later)
        return cls(
            flavors={b["metadata"]["name"]: Amount.of(b["spec"]) for b in first["Flavor"]},
            instances=tuple(Instance.of(b) for b in first["Instance"]),
            migrations=tuple(Migration.of(b) for b in first["Migration"]),
            hypervisors=tuple(Hypervisor.of(b) for b in first["Hypervisor"]),
            guests=tuple(
                Guest.of(node, uuid, record)
                for node, held in sorted((guests or {}).items())
                for uuid, record in sorted(held.items())
            ),
            later_instances=tuple(Instance.of(b) for b in second["Instance"]),
            later_migrations=tuple(Migration.of(b) for b in second["Migration"]),
        )


def _by_kind(items: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {
        kind: [] for kind in ("Instance", "Migration", "Hypervisor", "Flavor")
    }
    for body in items:
        kinds.setdefault(body.get("kind", ""), []).append(body)
    return kinds
