"""A list + watch of one kind, kept in a local cache (client-go's informer).

The label selector is sent to the API server, so an agent receives only the objects
labelled for its node: with 1,000 nodes, each agent's watch carries its own objects,
not every Instance in the cluster (what kopf's client-side filters would do). The
controller runs one per kind with no selector.

Invariants, whatever the connection does:
- After every (re)list the cache holds exactly what the server listed: objects deleted
  while no watch ran (a watch gap ended by 410 Gone, a restarted API server) are removed
  and reported as deletions. Watch events alone never tell of those.
- A watch never stalls for ever: the server is asked to end it after a jittered timeout,
  and the client gives up a little later if a half-open connection says nothing at all.
- Relists after failures back off with jitter, so a fleet of agents does not relist in step
  after an API server restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.api import names
from kubenova.kube import objects

log = logging.getLogger(__name__)

# client-go's reflector asks for a watch timeout between 5 and 10 min; ours is shorter so a
# watch that the server ends cleanly also bounds how long a bad connection can hide.
WATCH_TIMEOUT = 240  # seconds, before jitter (x1 to x2)
# The server ends the watch at its timeout; past this much more, the connection is dead.
CLIENT_GRACE = 30
ERROR_BACKOFF = (0.5, 1, 2, 5, 10)

OnChange = Callable[[str, dict[str, Any] | None], None]
Transform = Callable[[dict[str, Any]], dict[str, Any]]


class Source(Protocol):
    """Where the objects come from: the API server, or a fake in unit tests."""

    async def list(self) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self, version: str, timeout: int
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...


class CustomObjects:
    """kubenova's custom resources of one kind, across namespaces."""

    def __init__(self, objs: objects.Objects, kind: objects.Kind, label_selector: str) -> None:
        self.objs = objs
        self.kind = kind
        self.selector = label_selector

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        return await self.objs.list(self.kind, label_selector=self.selector)

    def watch(
        self, version: str, timeout: int
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Any]]:
        list_fn = self.objs.custom.list_cluster_custom_object
        args = (names.GROUP, names.VERSION, self.kind.plural)
        return _watch(list_fn, *args, selector=self.selector, version=version, timeout=timeout)


class Leases:
    """coordination.k8s.io Leases of one namespace (the nodes' heartbeats)."""

    def __init__(self, api: Any, namespace: str, label_selector: str) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.selector = label_selector

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        answer = await self.coordination.list_namespaced_lease(
            self.namespace, label_selector=self.selector
        )
        raw = self.coordination.api_client.sanitize_for_serialization(answer)
        return list(raw.get("items", [])), str(raw["metadata"]["resourceVersion"])

    def watch(
        self, version: str, timeout: int
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Any]]:
        list_fn = self.coordination.list_namespaced_lease
        return _watch(
            list_fn, self.namespace, selector=self.selector, version=version, timeout=timeout
        )


class CertificateRequests:
    """certificates.k8s.io CertificateSigningRequests of one signer (a field selector: the
    API server sends no other signer's requests)."""

    def __init__(self, api: Any, signer: str) -> None:
        self.certificates: Any = client.CertificatesV1Api(api)
        self.selector = f"spec.signerName={signer}"

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        answer = await self.certificates.list_certificate_signing_request(
            field_selector=self.selector
        )
        raw = self.certificates.api_client.sanitize_for_serialization(answer)
        return list(raw.get("items", [])), str(raw["metadata"]["resourceVersion"])

    def watch(
        self, version: str, timeout: int
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Any]]:
        list_fn = self.certificates.list_certificate_signing_request
        return _watch(list_fn, selector="", fields=self.selector, version=version, timeout=timeout)


@contextlib.asynccontextmanager
async def _watch(
    list_fn: Any, *args: Any, selector: str, version: str, timeout: int, fields: str = ""
) -> AsyncIterator[AsyncIterator[Any]]:
    """A watch through the client's list call, from `version`, with bookmarks."""
    stream = watch.Watch()
    async with stream.stream(
        list_fn,
        *args,
        label_selector=selector,
        **({"field_selector": fields} if fields else {}),
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=timeout,
    ) as events:
        yield events


def _identity(body: dict[str, Any]) -> dict[str, Any]:
    return body


class Informer:
    def __init__(
        self,
        objs: objects.Objects | None,
        kind: objects.Kind,
        label_selector: str,
        on_change: OnChange,
        *,
        source: Source | None = None,
        transform: Transform = _identity,
        rng: random.Random | None = None,
    ) -> None:
        if source is None:
            if objs is None:
                raise ValueError("an informer needs objects to list or a source")
            source = CustomObjects(objs, kind, label_selector)
        self.source = source
        self.kind = kind
        self.selector = label_selector
        self.on_change = on_change
        self.transform = transform  # client-go's SetTransform: e.g. drop managedFields
        self.rng = rng or random.Random()
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        # Watch events received, by type: what the server sent us, for the selection tests.
        self.received: collections.Counter[str] = collections.Counter()
        self.received_keys: set[str] = set()

    def put(self, body: dict[str, Any]) -> None:
        """Record our own write's answer so the cache never goes back to an older version."""
        k = objects.key(body)
        if objects.newer(self.cache.get(k), body):
            self.cache[k] = self.transform(body)
            self.on_change(k, self.cache[k])

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
                gone = isinstance(exc, ApiException) and exc.status == 410
                delay = 0.0 if gone and failures == 0 else self._backoff(failures)
                failures += 1
                log.log(
                    logging.INFO if gone else logging.WARNING,
                    "%s watch (%s) %s; relisting in %.1fs",
                    self.kind.kind,
                    self.selector or "all",
                    "expired (410 Gone)" if gone else f"failed: {exc!r}",
                    delay,
                )
                await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        base = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
        return base * (0.5 + self.rng.random())  # full jitter around the step

    async def resync(self) -> None:
        """List again now (a new leader's first look): safe beside the running watch."""
        await self._relist()

    async def _relist(self) -> str:
        items, version = await self.source.list()
        self.relists += 1
        fresh = {objects.key(i): i for i in items}
        for k in set(self.cache) - set(fresh):
            # Absent from the list: deleted, unless the watch delivered a version newer than
            # the list (a create that raced it, when the watch runs beside a resync).
            if not _after(self.cache[k], version):
                del self.cache[k]
                self.on_change(k, None)
        for k, body in fresh.items():
            current = self.cache.get(k)
            if current is None or (
                objects.newer(current, body)
                and current["metadata"].get("resourceVersion")
                != body["metadata"]["resourceVersion"]
            ):
                self.cache[k] = self.transform(body)
                self.on_change(k, self.cache[k])
        self.synced.set()
        return version

    async def _watch(self, version: str) -> None:
        """Watch from `version` until the server ends the watch, then resume from the last
        version seen; raises (to relist) on 410 and on a connection that went silent."""
        while True:
            timeout = int(WATCH_TIMEOUT * (1 + self.rng.random()))
            async with asyncio.timeout(timeout + CLIENT_GRACE):
                async with self.source.watch(version, timeout) as events:
                    async for event in events:
                        version = self._handle(event) or version

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
            self.cache[k] = self.transform(body)
            self.on_change(k, self.cache[k])
        return str(body["metadata"]["resourceVersion"])


def _after(body: dict[str, Any], version: str) -> bool:
    """Whether `body` is newer than a list at `version` (etcd revisions; see objects.newer)."""
    try:
        return int(body["metadata"]["resourceVersion"]) > int(version)
    except (KeyError, ValueError):
        return False
