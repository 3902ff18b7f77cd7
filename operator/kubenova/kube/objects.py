"""Reading and writing kubenova objects: merge patches, compare-and-swap, creates.

Every write the controller and agents make goes through here (the fleet benchmark counts
them from the API server's own metrics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.api import names

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# kind -> number of write requests this process made (create, patch); for benchmarks.


@dataclasses.dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return names.API_VERSION


FLAVOR = Kind("Flavor", "flavors", namespaced=False)
INSTANCE = Kind("Instance", "instances", namespaced=True)
MIGRATION = Kind("Migration", "migrations", namespaced=True)
HYPERVISOR = Kind("Hypervisor", "hypervisors", namespaced=False)
# Not kubenova's: the nodes' heartbeat Leases (kube/heartbeat.py), named for the informer.
LEASE = Kind("Lease", "leases", namespaced=True)
CSR = Kind("CertificateSigningRequest", "certificatesigningrequests", namespaced=False)


class ConflictError(Exception):
    """A precondition failed: someone else changed the object first."""


class NotFoundError(Exception):
    pass


class NotLeaderError(Exception):
    """A write refused before it was sent: this process no longer leads (kube/lease.py)."""


def _translate(exc: ApiException) -> Exception:
    if exc.status == 409 or (exc.status == 422 and "test operation" in str(exc.body)):
        return ConflictError(str(exc.body))
    if exc.status == 404:
        return NotFoundError(str(exc.body))
    return exc


T = TypeVar("T")
THROTTLE_RETRIES = 20  # 429 means "not processed": always safe to send again


def _retry_throttled(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Retry HTTP 429 (API priority and fairness, or storage still initialising just after
    a CRD is created) after the server's Retry-After, bounded."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(THROTTLE_RETRIES):
            try:
                return await fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status != 429 or attempt == THROTTLE_RETRIES - 1:
                    raise
                headers: dict[str, str] = dict(exc.headers or {})
                retry_after = headers.get("Retry-After", "1")
                await asyncio.sleep(min(5.0, float(retry_after) if retry_after.isdigit() else 1.0))
        raise AssertionError("unreachable")

    return wrapper


class Objects:
    """CRUD on kubenova custom resources for one ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        # Any: the generated stubs take positional group/version/plural in an order mypy
        # cannot follow through *args, and omit the `_content_type` override we need.
        self.custom: Any = client.CustomObjectsApi(api)
        # Asked before every write; the controller's leader sets it to its elector's
        # is_leader, so a leader paused past its lease sends nothing on resume.
        self.may_write: Callable[[], bool] = lambda: True

    def _check_may_write(self) -> None:
        if not self.may_write():
            raise NotLeaderError("not the leader any more: write not sent")

    def _args(self, kind: Kind, namespace: str | None) -> tuple[Any, ...]:
        if kind.namespaced:
            return (names.GROUP, names.VERSION, namespace, kind.plural)
        return (names.GROUP, names.VERSION, kind.plural)

    @_retry_throttled
    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            if kind.namespaced:
                result = await self.custom.get_namespaced_custom_object(
                    *self._args(kind, namespace), name
                )
            else:
                result = await self.custom.get_cluster_custom_object(*self._args(kind, None), name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(result)

    @_retry_throttled
    async def create(
        self, kind: Kind, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        self._check_may_write()
        try:
            if kind.namespaced:
                result = await self.custom.create_namespaced_custom_object(
                    *self._args(kind, namespace), body
                )
            else:
                result = await self.custom.create_cluster_custom_object(
                    *self._args(kind, None), body
                )
        except ApiException as exc:
            raise _translate(exc) from exc
        return dict(result)

    @_retry_throttled
    async def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: dict[str, Any] | list[dict[str, Any]],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """Merge patch (dict) or JSON patch (list) of the object or its /status."""
        self._check_may_write()
        content_type = JSON_PATCH if isinstance(body, list) else MERGE
        if kind.namespaced:
            fn = (
                self.custom.patch_namespaced_custom_object_status
                if status
                else self.custom.patch_namespaced_custom_object
            )
        else:
            fn = (
                self.custom.patch_cluster_custom_object_status
                if status
                else self.custom.patch_cluster_custom_object
            )
        try:
            result = await fn(*self._args(kind, namespace), name, body, _content_type=content_type)
        except ApiException as exc:
            raise _translate(exc) from exc
        return dict(result)

    async def set_phase(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        expected: str | None,
        status: dict[str, Any],
        transition: dict[str, Any] | None = None,
        resource_version: str | None = None,
        drop_oldest: int = 0,
    ) -> dict[str, Any]:
        """Compare-and-swap on status.phase: apply `status` only if the phase is `expected`,
        appending `transition` to status.phaseTransitions in the same write, after dropping
        its `drop_oldest` first entries (the list is bounded on the CRD; only phase changes
        append to it, so the phase test also guards the length the caller read).

        With no phase yet (expected None) the precondition is the resourceVersion read.
        """
        if expected is None:
            if resource_version is None:
                raise ValueError("a first phase needs the resourceVersion it was decided on")
            first = {**status, **({"phaseTransitions": [transition]} if transition else {})}
            body: dict[str, Any] = {
                "metadata": {"resourceVersion": resource_version},
                "status": first,
            }
            return await self.patch(kind, namespace, name, body, status=True)
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/status/phase", "value": expected}]
        ops += [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in status.items()]
        ops += [{"op": "remove", "path": "/status/phaseTransitions/0"}] * drop_oldest
        if transition:
            ops.append({"op": "add", "path": "/status/phaseTransitions/-", "value": transition})
        return await self.patch(kind, namespace, name, ops, status=True)

    @_retry_throttled
    async def list(
        self, kind: Kind, *, label_selector: str = "", namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects (across namespaces unless given) and the list's resourceVersion."""
        if kind.namespaced and namespace:
            result = await self.custom.list_namespaced_custom_object(
                *self._args(kind, namespace), label_selector=label_selector
            )
        else:
            result = await self.custom.list_cluster_custom_object(
                names.GROUP, names.VERSION, kind.plural, label_selector=label_selector
            )
        return list(result.get("items", [])), result["metadata"]["resourceVersion"]


def key(body: dict[str, Any]) -> str:
    """namespace/name, or name for cluster-scoped objects."""
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def newer(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Whether `b` is a newer version of the object than `a` (etcd revisions only grow).

    resourceVersion is opaque by contract, but every API server backed by etcd uses the
    revision; the caches use this to keep their own write's answer over a stale event.
    """
    if a is None:
        return True
    try:
        return int(b["metadata"]["resourceVersion"]) >= int(a["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True
