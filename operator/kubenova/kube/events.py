"""Kubernetes Events on kubenova objects: what `kubectl describe` and `kubectl events` show.

Posted in the background, as client-go's event broadcaster does: a reconcile queues its
events and goes on, so an Event never holds up the writes that move a resize along (each
post is an API round trip), and a slow or failing API server delays only the Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova import clock
from kubenova.api import names

log = logging.getLogger(__name__)


# Beyond this many queued, events are dropped and logged (client-go's broadcaster drops
# too). 1,000 concurrent resizes queue ~1,000 at each phase; 1,000 here dropped 7 % of them.
QUEUE_SIZE = 5000
SENDERS = 8  # posts in flight


class Recorder:
    def __init__(self, api: client.ApiClient, component: str, instance: str) -> None:
        self.core: Any = client.CoreV1Api(api)  # Any: we send a plain dict, not a CoreV1Event
        self.component = component
        self.instance = instance
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)
        self._senders: list[asyncio.Task[None]] = []
        # The controller's leader sets this to its elector's is_leader (as Objects.may_write):
        # events queued before a pause are dropped, not posted by a process that lost the lead.
        self.may_write: Callable[[], bool] = lambda: True

    def post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one event for posting; never blocks, never raises (events are best effort)."""
        if not self._senders:
            self._senders = [asyncio.create_task(self._send()) for _ in range(SENDERS)]
        try:
            self._queue.put_nowait(self._event(obj, type_, reason, message))
        except asyncio.QueueFull:
            log.warning(
                "event %s on %s dropped: %d queued", reason, obj["metadata"]["name"], QUEUE_SIZE
            )

    async def close(self, timeout: float = 5.0) -> None:
        """Post what is queued (for up to `timeout` seconds), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        for task in self._senders:
            task.cancel()

    async def _send(self) -> None:
        while True:
            namespace, body = await self._queue.get()
            try:
                if not self.may_write():
                    log.info("event %s dropped: not the leader any more", body["reason"])
                    continue
                await self.core.create_namespaced_event(namespace, body)
            except ApiException as exc:
                log.warning("event %s not posted: %s", body["reason"], exc.reason)
            except Exception:
                log.exception("event %s not posted", body["reason"])
            finally:
                self._queue.task_done()

    def _event(
        self, obj: dict[str, Any], type_: str, reason: str, message: str
    ) -> tuple[str, dict[str, Any]]:
        meta = obj["metadata"]
        now = clock.now()
        namespace = meta.get("namespace") or "default"
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": f"{names.GROUP}/{self.component}",
            "reportingInstance": self.instance,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        return namespace, body
