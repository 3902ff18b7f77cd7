"""Leader election on a coordination.k8s.io Lease (what kube-controller-manager does).

Every controller replica watches and keeps its store warm; only the Lease holder runs
the work queue and writes. A holder that cannot renew within the lease duration stops
the process rather than risk two writers (client-go's leaderelection does the same).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # MicroTime, as the Lease API wants


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_every: float = 5.0,
    ) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_every = renew_every

    def _body(self, current: dict[str, Any] | None, now: datetime.datetime) -> dict[str, Any]:
        spec = (current or {}).get("spec", {})
        taking_over = spec.get("holderIdentity") != self.identity
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, int(self.duration)),
                "acquireTime": _micro(now) if taking_over else spec.get("acquireTime"),
                "renewTime": _micro(now),
                "leaseTransitions": int(spec.get("leaseTransitions", 0))
                + (1 if taking_over else 0),
            },
        }

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the lease; True if we hold it afterwards."""
        now = _now()
        try:
            lease = await self.coordination.read_namespaced_lease(self.name, self.namespace)
            current: dict[str, Any] | None = (
                self.coordination.api_client.sanitize_for_serialization(lease)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        if current is not None:
            spec = current.get("spec", {})
            holder = spec.get("holderIdentity")
            renewed = _parse(spec.get("renewTime"))
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            alive = renewed is not None and (now - renewed).total_seconds() < duration
            if holder and holder != self.identity and alive:
                return False
        body = self._body(current, now)
        try:
            if current is None:
                await self.coordination.create_namespaced_lease(self.namespace, body)
            else:
                await self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (409, 422):  # someone else wrote it first
                return False
            raise
        return True

    async def acquire(self) -> None:
        logged = False
        while True:
            try:
                if await self.try_acquire():
                    log.info(
                        "leader election: %s holds %s/%s", self.identity, self.namespace, self.name
                    )
                    return
            except Exception as exc:
                log.warning("leader election: %s", exc)
            if not logged:
                log.info("leader election: standing by for %s/%s", self.namespace, self.name)
                logged = True
            await asyncio.sleep(self.renew_every / 2)

    async def hold(self) -> None:
        """Renew until we cannot for a whole lease duration; then return (leadership lost)."""
        last = _now()
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                if await self.try_acquire():
                    last = _now()
                    continue
                log.error("leader election: another holder took %s", self.name)
                return
            except Exception as exc:
                log.warning("leader election: renew failed: %s", exc)
            if (_now() - last).total_seconds() >= self.duration:
                return

    async def release(self) -> None:
        """Hand the lease over at once on a clean shutdown (no waiting for expiry)."""
        try:
            lease = await self.coordination.read_namespaced_lease(self.name, self.namespace)
            current = self.coordination.api_client.sanitize_for_serialization(lease)
            if current.get("spec", {}).get("holderIdentity") != self.identity:
                return
            current["spec"]["holderIdentity"] = None
            current["spec"]["renewTime"] = None
            await self.coordination.replace_namespaced_lease(self.name, self.namespace, current)
        except Exception as exc:
            log.warning("leader election: release failed: %s", exc)
