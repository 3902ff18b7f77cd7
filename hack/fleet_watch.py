"""The fleet benchmark's eyes: one watch on every Instance, timing each phase reached.

The watch runs in the benchmark process, as `kubectl get inst -w` would for a user, so a
latency measured here is what a user sees: from their write to the phase arriving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kubernetes_asyncio import watch

from kubenova.api import names
from kubenova.kube import objects

Action = Callable[[str], Awaitable[None]]
POLL_SECONDS = 0.02


class InstanceWatcher:
    def __init__(self, objs: objects.Objects) -> None:
        self.objs = objs
        self.synced = asyncio.Event()
        # instance name -> (monotonic time, phase) each time its phase was seen to change
        self.history: dict[str, list[tuple[float, str]]] = {}

    async def run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except Exception:  # an overloaded server (504), an expired version: start over
                await asyncio.sleep(0.5)

    async def _list_and_watch(self) -> None:
        items, version = await self.objs.list(objects.INSTANCE, namespace="default")
        for body in items:
            self._saw(body)
        self.synced.set()
        stream = watch.Watch()
        async with stream.stream(
            self.objs.custom.list_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            "default",
            objects.INSTANCE.plural,
            resource_version=version,
            timeout_seconds=600,
        ) as events:
            async for event in events:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._saw(event["raw_object"])

    def _saw(self, body: dict[str, Any]) -> None:
        phase = body.get("status", {}).get("phase")
        if not phase:
            return
        seen = self.history.setdefault(body["metadata"]["name"], [])
        if not seen or seen[-1][1] != phase:
            seen.append((time.monotonic(), phase))

    def reached(self, name: str, phase: str, after: float) -> float:
        """When `name` was first seen in `phase` after `after`; inf if not yet."""
        return next(
            (t for t, p in self.history.get(name, []) if p == phase and t >= after), float("inf")
        )

    async def wait_all(
        self, names_: list[str], phase: str, *, after: float, timeout: float
    ) -> list[str]:
        """Wait until every instance reached `phase`; returns those that did not in time."""
        deadline = time.monotonic() + timeout
        pending = list(names_)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if self.reached(n, phase, after) == float("inf")]
            await asyncio.sleep(POLL_SECONDS)
        return pending


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.5)


async def gather_limited(coros: Iterable[Awaitable[None]], limit: int) -> None:
    """Run the awaitables at most `limit` at a time (users acting in parallel)."""
    gate = asyncio.Semaphore(limit)

    async def gated(coro: Awaitable[None]) -> None:
        async with gate:
            await coro

    await asyncio.gather(*(gated(c) for c in coros))
