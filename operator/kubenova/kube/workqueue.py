"""A keyed work queue (client-go's workqueue): deduplicated, delayed, one worker per key.

A key added while it is being processed is processed again afterwards, so no change is
lost and no key is ever reconciled by two workers at once; after a failure it waits out its
backoff first (client-go's rate-limited requeue), whatever was added meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[float | None]]  # returns: requeue after N seconds, or None

FAILURE_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class WorkQueue:
    def __init__(self, handler: Handler, *, workers: int = 4, name: str = "queue") -> None:
        self.handler = handler
        self.workers = workers
        self.name = name
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, int] = {}

    def add(self, key: str) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds; an earlier pending request wins."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            failed = False
            try:
                delay = await self.handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                failed = True
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = FAILURE_BACKOFF[min(count, len(FAILURE_BACKOFF) - 1)]
                log.exception("%s: %s failed (retry in %ss)", self.name, key, delay)
            finally:
                self._active.discard(key)
            again = key in self._again
            self._again.discard(key)
            if again and not failed:
                self.add(key)
            elif delay is not None:
                # A failed key waits out its backoff even if it changed meanwhile: a change
                # event per retry would otherwise turn a failing reconcile into a busy loop.
                self.add_after(key, delay)

    @property
    def idle(self) -> bool:
        return not (self._queued or self._active)
