"""Log set-up for every process: text for people, JSON lines for log collectors.

Each record carries the object it concerns where known: `instance` (namespace/name),
`migration` and `node`. Reconciles bind them once (`bind_instance`) in a context
variable, so every log line below a reconcile, ours and the libraries', carries them
without each call site passing them. A process-wide field (an agent's own node) is fixed
at set-up and wins. kopf's own records name their object in `k8s_ref`; it becomes the
same fields. One handler on the root logger serves kubenova, kopf and aiohttp alike.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from pythonjsonlogger import core, json

FIELDS = ("instance", "migration", "node")
# Immutable by convention: bind() replaces the dict, never mutates it (tasks share it).
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kubenova_log_context", default=None
)


def bind(**fields: str | None) -> None:
    """Set (or, with None, clear) context fields for the rest of the current task."""
    current = dict(_context.get() or {})
    for key, value in fields.items():
        if value:
            current[key] = value
        else:
            current.pop(key, None)
    _context.set(current)


def bind_instance(body: dict[str, Any]) -> None:
    """The fields of one Instance: what a reconcile of it logs under."""
    meta, status = body.get("metadata", {}), body.get("status", {})
    bind(
        instance=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        migration=status.get("migrationRef"),
        node=status.get("node"),
    )


class _Context(logging.Filter):
    """Copies the context fields (and the fixed ones) onto each record."""

    def __init__(self, fixed: dict[str, str]) -> None:
        super().__init__()
        self.fixed = fixed

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_context.get() or {})
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            where = f"{ref.get('namespace') or ''}/{ref['name']}".lstrip("/")
            fields["instance" if ref.get("kind") == "Instance" else "object"] = where
        fields.update(self.fixed)
        for key, value in fields.items():
            setattr(record, key, value)
        return True


class _Text(logging.Formatter):
    """The classic line, with `key=value` for the context fields a record has."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{k}={getattr(record, k)}" for k in (*FIELDS, "object") if getattr(record, k, None)
        )
        return f"{line} [{extra}]" if extra else line


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return json.JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # kopf's bookkeeping extras: k8s_ref is rendered as instance/object already.
            reserved_attrs=[*core.RESERVED_ATTRS, "k8s_skip", "k8s_ref"],
        )
    if log_format == "text":
        return _Text("%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise ValueError(f"unknown log format {log_format!r}: use text or json")


def setup(*, level: str, log_format: str, **fixed: str) -> None:
    """Configure the root logger once per process (replacing any earlier handler)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(_Context(fixed))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # kopf logs every handler success at INFO: one line per watch event, noise here.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
