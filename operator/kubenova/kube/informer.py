"""A label-selected list + watch of one kind, kept in a local cache (client-go's informer).

The label selector is sent to the API server, so an agent receives only the objects
labelled for its node: with 1,000 nodes, each agent's watch carries its own objects,
not every Instance in the cluster (what kopf's client-side filters would do).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.api import names
from kubenova.kube import objects

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 240  # seconds; the server ends the watch, we resume from the last version
ERROR_BACKOFF = (0.5, 1, 2, 5, 10)

OnChange = Callable[[str, dict[str, Any] | None], None]


class Informer:
    def __init__(
        self, objs: objects.Objects, kind: objects.Kind, label_selector: str, on_change: OnChange
    ) -> None:
        self.objs = objs
        self.kind = kind
        self.selector = label_selector
        self.on_change = on_change
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        # Watch events received, by type: what the server sent us, for the selection tests.
        self.received: collections.Counter[str] = collections.Counter()
        self.received_keys: set[str] = set()

    def put(self, body: dict[str, Any]) -> None:
        """Record our own write's answer so the cache never goes back to an older version."""
        k = objects.key(body)
        if objects.newer(self.cache.get(k), body):
            self.cache[k] = body
            self.on_change(k, body)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection or an API error: relist
                delay = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
                failures += 1
                if not (isinstance(exc, ApiException) and exc.status == 410):
                    log.warning(
                        "%s watch (%s) failed: %s; relisting in %ss",
                        self.kind.kind,
                        self.selector,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def _relist(self) -> str:
        items, version = await self.objs.list(self.kind, label_selector=self.selector)
        fresh = {objects.key(i): i for i in items}
        for k in set(self.cache) - set(fresh):
            del self.cache[k]
            self.on_change(k, None)
        for k, body in fresh.items():
            if (
                self.cache.get(k, {}).get("metadata", {}).get("resourceVersion")
                != body["metadata"]["resourceVersion"]
            ):
                self.cache[k] = body
                self.on_change(k, body)
        self.synced.set()
        return version

    async def _watch(self, version: str) -> None:
        while True:
            stream = watch.Watch()
            async with stream.stream(
                self.objs.custom.list_cluster_custom_object,
                names.GROUP,
                names.VERSION,
                self.kind.plural,
                label_selector=self.selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT,
            ) as events:
                async for event in events:
                    version = self._handle(event) or version
            version = stream.resource_version or version

    def _handle(self, event: dict[str, Any]) -> str | None:
        type_, body = event["type"], event["raw_object"]
        self.received[type_] += 1
        if type_ == "BOOKMARK":
            return str(body["metadata"]["resourceVersion"])
        k = objects.key(body)
        self.received_keys.add(k)
        log.debug("watch event %s %s %s (%s)", type_, self.kind.kind, k, self.selector)
        if type_ == "DELETED":
            if self.cache.pop(k, None) is not None:
                self.on_change(k, None)
        elif objects.newer(self.cache.get(k), body):
            self.cache[k] = body
            self.on_change(k, body)
        return str(body["metadata"]["resourceVersion"])
