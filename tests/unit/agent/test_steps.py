"""The agent's small rules that need no API server: which shutdown timeout applies."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kubenova.agent import steps
from kubenova.api import instance
from tests import models as m


def with_timeout(seconds: int | None) -> instance.Instance:
    body: dict[str, Any] = m.inst().model_dump(mode="json", by_alias=True, exclude_none=True)
    if seconds is not None:
        body["spec"]["shutdownTimeoutSeconds"] = seconds
    return instance.Instance.model_validate(body)


@pytest.mark.parametrize(
    ("own", "expected"),
    [(None, 60.0), (0, 0.0), (5, 5.0)],
    ids=["unset-agent-default", "zero-is-a-hard-power-off", "own"],
)
def test_shutdown_timeout(own: int | None, expected: float) -> None:
    node: Any = SimpleNamespace(cfg=SimpleNamespace(shutdown_timeout_seconds=60.0))
    assert steps.shutdown_timeout(node, with_timeout(own)) == expected
