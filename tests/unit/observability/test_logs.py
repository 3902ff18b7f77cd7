"""JSON log lines carry the bound instance, migration and node, and parse."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kubenova.observability import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.setup(level="INFO", log_format="json", node="node-a")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]
    logs.bind(instance=None, migration=None, node=None)


def test_a_reconcile_logs_under_its_instance(captured: io.StringIO) -> None:
    logs.bind_instance(
        {"metadata": {"namespace": "ns", "name": "vm"}, "status": {"migrationRef": "vm-x1"}}
    )
    logging.getLogger("kubenova.test").warning("moved %s", "on")
    record = json.loads(captured.getvalue())
    assert record["message"] == "moved on"
    assert record["level"] == "WARNING"
    assert (record["instance"], record["migration"], record["node"]) == ("ns/vm", "vm-x1", "node-a")


def test_kopf_records_name_their_object(captured: io.StringIO) -> None:
    ref = {"kind": "Instance", "namespace": "ns", "name": "vm", "uid": "u"}
    logging.getLogger("kopf.objects").error("handler failed", extra={"k8s_ref": ref})
    record = json.loads(captured.getvalue())
    assert record["instance"] == "ns/vm"
    assert "k8s_ref" not in record


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="use text or json"):
        logs.formatter("xml")
