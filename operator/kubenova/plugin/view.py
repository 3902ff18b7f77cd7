"""What `kubectl nova` prints: tables and advice. Pure: bodies in, text out."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

NONE = "-"  # an empty cell, as the openstack client prints one


def table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned, three spaces apart, like `kubectl get`."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *cells, strict=False)]
    lines = [
        "   ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *cells)
    ]
    return "\n".join(lines)


def _get(body: dict[str, Any], *path: str) -> str:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return str(value) if value not in (None, "") else NONE


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _field(*path: str) -> Callable[[dict[str, Any]], str]:
    return lambda body: _get(body, *path)


def timestamp(text: str) -> str:
    """RFC 3339 to the second, in UTC, as kubectl prints creationTimestamp."""
    if text == NONE:
        return text
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def updated_at(body: dict[str, Any]) -> str:
    """When the migration entered its current phase (nova migration-list's Updated At)."""
    times = body.get("status", {}).get("phaseTransitions", [])
    return timestamp(
        str(times[-1]["time"]) if times else _get(body, "metadata", "creationTimestamp")
    )


INSTANCE_COLUMNS: tuple[Column, ...] = (
    ("NAME", _field("metadata", "name")),
    ("FLAVOR", _field("spec", "flavor")),
    ("STATUS", _field("status", "phase")),
    ("TASK", _field("status", "taskState")),
    ("NODE", _field("status", "node")),
    ("POWER", _field("status", "host", "powerState")),  # what the hypervisor reports
)
MIGRATION_COLUMNS: tuple[Column, ...] = (  # nova migration-list's, with kubenova's names
    ("NAME", _field("metadata", "name")),
    ("INSTANCE", _field("spec", "instanceName")),
    ("TYPE", _field("spec", "type")),
    ("SOURCE", _field("spec", "sourceNode")),
    ("DEST", _field("spec", "destNode")),
    ("OLD FLAVOR", _field("spec", "oldFlavor", "name")),
    ("NEW FLAVOR", _field("spec", "newFlavor", "name")),
    ("STATUS", _field("status", "phase")),
    ("CREATED", lambda body: timestamp(_get(body, "metadata", "creationTimestamp"))),
    ("UPDATED", updated_at),
)
NAMESPACE: Column = ("NAMESPACE", _field("metadata", "namespace"))


def rows(
    items: Sequence[dict[str, Any]], columns: Sequence[Column], *, namespace: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of `items`, with a NAMESPACE column first if asked (-A)."""
    chosen = [NAMESPACE, *columns] if namespace else list(columns)
    return [h for h, _ in chosen], [[cell(body) for _, cell in chosen] for body in items]


def by_creation(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        items,
        key=lambda b: (b["metadata"].get("creationTimestamp", ""), b["metadata"]["name"]),
    )


def not_verifying(name: str, phase: str | None, task: str | None, action: str) -> str:
    """Why confirm/revert cannot run now, and what to do instead."""
    where = f"instance {name} is {phase or 'not built yet'}" + (f" ({task})" if task else "")
    if phase == "VERIFY_RESIZE":  # with a task: a confirm or revert already runs
        return f"{where}: a {task or 'change'} is already under way; wait for it to finish"
    if phase in ("ACTIVE", "SHUTOFF"):
        return (
            f"{where}: there is no resize to {action}; start one with "
            f"`kubectl nova resize {name} --flavor FLAVOR` or `kubectl nova migrate {name}`"
        )
    if phase == "RESIZE":
        return (
            f"{where}, not VERIFY_RESIZE: the resize is still running; "
            f"{action} once it reaches VERIFY_RESIZE "
            f"(kubectl wait instance/{name} --for=jsonpath='{{.status.phase}}'=VERIFY_RESIZE)"
        )
    if phase == "REVERT_RESIZE":
        return f"{where}: it is being reverted; there is nothing left to {action}"
    if phase == "ERROR":
        return f"{where}: nothing to {action}; see `kubectl describe instance {name}` for why"
    return f"{where}, not VERIFY_RESIZE: only a resized instance can be {action}ed"


def cannot_move(name: str, phase: str | None, task: str | None) -> str | None:
    """Why a resize or migrate cannot start now (None: it can)."""
    if phase in ("ACTIVE", "SHUTOFF") and not task:
        return None
    where = f"instance {name} is {phase or 'not built yet'}" + (f" ({task})" if task else "")
    if phase in ("RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE"):
        return (
            f"{where}: a resize or migration is pending; confirm or revert it first "
            f"(kubectl nova confirm {name} | kubectl nova revert {name})"
        )
    return f"{where}: only an ACTIVE or SHUTOFF instance can be resized or migrated"
