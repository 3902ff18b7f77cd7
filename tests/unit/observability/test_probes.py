"""Liveness and readiness verdicts: what /healthz and /readyz answer."""

from __future__ import annotations

import asyncio

from kubenova.observability import probes


def test_a_loop_that_stops_beating_is_not_alive() -> None:
    health = probes.Health()
    health.beat("heartbeat", within=60)
    assert health.problems() == []
    health.beat("heartbeat", within=-1)  # its limit has passed
    [problem] = health.problems()
    assert problem.startswith("heartbeat silent for")


def test_an_ended_task_is_not_alive() -> None:
    async def scenario() -> list[str]:
        health = probes.Health()
        task = asyncio.create_task(asyncio.sleep(0))
        health.watch("queue", task)
        await task
        return health.problems()

    assert asyncio.run(scenario()) == ["queue ended"]


def test_ready_only_when_every_check_passes() -> None:
    health = probes.Health()
    synced = [False]
    health.ready_when("informers synced", lambda: synced[0])
    assert health.unready() == ["informers synced"]
    synced[0] = True
    assert health.unready() == []
