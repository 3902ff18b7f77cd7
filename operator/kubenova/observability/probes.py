"""One HTTP port per process: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Liveness: the event loop answers (this server runs on it), no watched task has ended, and
every loop that beats has beaten recently. A stuck loop is worth a restart; an API server
outage is not, so loops beat whether or not their work succeeded.
Readiness: every readiness check passes (the controller's store primed, the agent's
informers synced): until then the process would act on, or answer from, a partial view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from aiohttp import web

from kubenova.observability import metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Health:
    ready_checks: dict[str, Callable[[], bool]] = dataclasses.field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    beats: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def ready_when(self, name: str, check: Callable[[], bool]) -> None:
        self.ready_checks[name] = check

    def watch(self, name: str, task: asyncio.Task[None]) -> None:
        """A task that must run for as long as the process does."""
        self.tasks[name] = task

    def beat(self, name: str, *, within: float) -> None:
        """Loop `name` is alive; it must beat again within `within` seconds."""
        self.beats[name] = (time.monotonic(), within)

    def problems(self) -> list[str]:
        now = time.monotonic()
        found = [f"{name} ended" for name, task in self.tasks.items() if task.done()]
        found += [
            f"{name} silent for {now - last:.0f}s (limit {within:.0f}s)"
            for name, (last, within) in self.beats.items()
            if now - last > within
        ]
        return found

    def unready(self) -> list[str]:
        return [name for name, check in self.ready_checks.items() if not check()]


# One per process: the controller and the agent each run one health endpoint.
HEALTH = Health()


def app(health: Health) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        problems = health.problems()
        if problems:
            return web.Response(status=503, text="; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = health.unready()
        if waiting:
            return web.Response(status=503, text="waiting for: " + ", ".join(waiting) + "\n")
        return web.Response(text="ok\n")

    application = web.Application()
    application.router.add_get("/metrics", metrics_page)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    return application


async def serve(port: int, health: Health = HEALTH) -> web.AppRunner:
    """Start serving on every interface; the caller cleans the runner up on exit."""
    runner = web.AppRunner(app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # Prometheus scrapes the pod IP
    log.info("metrics and probes on :%d (/metrics /healthz /readyz)", port)
    return runner
