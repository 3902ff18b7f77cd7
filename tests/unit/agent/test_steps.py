"""The agent's small rules that need no API server: which shutdown timeout applies, and
that a destination never mixes TLS and plain HTTP."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from types import SimpleNamespace
from typing import Any

import pytest

from kubenova.agent import steps
from kubenova.api import instance
from kubenova.drivers import base
from kubenova.lifecycle import stages
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


@pytest.mark.parametrize(
    ("endpoint", "tls", "refusal"),
    [
        ("http://10.0.0.2:8090", True, "pulls over TLS only"),
        ("https://10.0.0.2:8090", False, "has no transfer CA"),
    ],
    ids=["tls-destination-plain-source", "plain-destination-tls-source"],
)
def test_a_destination_never_mixes_tls_and_plain_http(
    tmp_path: pathlib.Path, endpoint: str, tls: bool, refusal: str
) -> None:
    """No downgrade: a destination with the transfer CA pulls from an https source only,
    and one without it cannot verify an https source; either way nothing is requested."""

    async def prepare_incoming(*_: object, **__: object) -> pathlib.Path:
        return tmp_path / "disk"

    async def get(*_: object) -> dict[str, Any]:
        return {"status": {"agent": {"transferEndpoint": endpoint}}}

    node: Any = SimpleNamespace(
        driver=SimpleNamespace(prepare_incoming=prepare_incoming),
        objs=SimpleNamespace(get=get),
        transfer_client_tls=ssl.create_default_context() if tls else None,
    )
    mig = m.mig("post-migrating", dest="node-b")
    with pytest.raises(base.DriverError, match=refusal):
        asyncio.run(steps._receive_disk(node, mig, "default/vm", parts=(base.Part.DISK,)))
    assert not (tmp_path / "disk").exists()


def test_every_duty_of_the_stage_table_has_its_step() -> None:
    assert set(steps.DUTIES) == set(stages.Duty) - {stages.Duty.NONE}
