"""Builders of parsed API models for unit tests of the pure packages."""

from __future__ import annotations

import datetime
from typing import Any

from kubenova.api import common, flavor, instance, migration, names

T0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
TINY = common.FlavorSnapshot(name="m1.tiny", vcpus=1, memory_mib=512, disk_gib=1)
SMALL = common.FlavorSnapshot(name="m1.small", vcpus=1, memory_mib=2048, disk_gib=20)
UID = "11111111-2222-4333-8444-555555555555"  # the Instance's uid, and so its uuid


def flavor_spec(snap: common.FlavorSnapshot = SMALL, **overrides: Any) -> flavor.FlavorSpec:
    fields = {"vcpus": snap.vcpus, "memory_mib": snap.memory_mib, "disk_gib": snap.disk_gib}
    return flavor.FlavorSpec(**{**fields, **overrides})


def inst(
    *,
    flavor: str = "m1.tiny",
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    deleting: bool = False,
    power: str = "Running",
) -> instance.Instance:
    return instance.Instance.model_validate(
        {
            "metadata": {
                "name": "vm",
                "namespace": "default",
                "uid": UID,
                "generation": 1,
                "annotations": annotations or {},
                "labels": labels or {},
                "finalizers": [names.FINALIZER] if finalizers is None else finalizers,
                **({"deletionTimestamp": T0.isoformat()} if deleting else {}),
            },
            "spec": {"flavor": flavor, "image": "cirros", "powerState": power},
            "status": status or {},
        }
    )


def host(
    power: str = "Running", snap: common.FlavorSnapshot = TINY, at: datetime.datetime = T0
) -> dict[str, Any]:
    return {
        "powerState": power,
        "vcpus": snap.vcpus,
        "memoryMiB": snap.memory_mib,
        "diskGiB": snap.disk_gib,
        "observedAt": at.isoformat(),
    }


def active(
    node: str = "node-a", snap: common.FlavorSnapshot = TINY, **extra: Any
) -> dict[str, Any]:
    return {
        "phase": "ACTIVE",
        "node": node,
        "flavor": snap.to_wire(),
        "uuid": UID,
        "host": host(snap=snap),
        **extra,
    }


def mig(
    phase: str | None,
    *,
    source: str = "node-a",
    dest: str = "node-a",
    type_: str = "resize",
    old: common.FlavorSnapshot = TINY,
    new: common.FlavorSnapshot = SMALL,
    transitions: list[tuple[str, datetime.datetime]] = (),  # type: ignore[assignment]
) -> migration.Migration:
    return migration.Migration.model_validate(
        {
            "metadata": {"name": "vm-abc", "namespace": "default"},
            "spec": {
                "instanceName": "vm",
                "instanceUuid": UID,
                "type": type_,
                "sourceNode": source,
                "destNode": dest,
                "oldFlavor": old.to_wire(),
                "newFlavor": new.to_wire(),
            },
            "status": {
                **({"phase": phase} if phase else {}),
                "phaseTransitions": [{"phase": p, "time": t.isoformat()} for p, t in transitions],
            },
        }
    )


def history(
    *phases: migration.MigrationPhase, start: datetime.datetime = T0
) -> list[tuple[str, datetime.datetime]]:
    """Phase transitions a second apart, for `mig(transitions=...)`."""
    return [(p.value, start + datetime.timedelta(seconds=i)) for i, p in enumerate(phases)]
