"""A node's heartbeat Lease: one write per renew while our copy is current; a read first
when another writer moved it or it is gone."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.api import names
from kubenova.kube import heartbeat


class FakeLeases:
    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None
        self.version = 0
        self.calls: list[str] = []

    def _answer(self) -> Any:
        meta = types.SimpleNamespace(resource_version=str(self.version))
        return types.SimpleNamespace(metadata=meta)

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        self.calls.append("read")
        if self.stored is None:
            raise ApiException(status=404)
        return self._answer()

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append("create")
        self.version += 1
        self.stored = body
        return self._answer()

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        self.calls.append("replace")
        if self.stored is None:
            raise ApiException(status=404)
        if body["metadata"].get("resourceVersion") != str(self.version):
            raise ApiException(status=409)
        self.version += 1
        self.stored = body
        return self._answer()


def test_renews_create_once_then_write_once_each_and_recover_from_a_conflict() -> None:
    fake = FakeLeases()

    async def main() -> None:
        lease = heartbeat.NodeLease(
            None,  # type: ignore[arg-type]
            namespace="kubenova-system",
            node="node-a",
            every=10,
        )
        lease.coordination = fake
        await lease.renew()
        assert fake.calls == ["read", "create"]
        await lease.renew()
        await lease.renew()
        assert fake.calls[2:] == ["replace", "replace"]
        fake.version += 5  # another writer (a restarted agent of the same node)
        fake.calls.clear()
        await lease.renew()
        assert fake.calls == ["replace", "read", "replace"]
        fake.stored = None  # deleted by hand
        fake.calls.clear()
        await lease.renew()
        assert fake.calls == ["replace", "read", "create"]

    asyncio.run(main())
    assert fake.stored is not None
    assert fake.stored["metadata"]["name"] == "kubenova-node-node-a"
    assert heartbeat.node_of(fake.stored) == "node-a"
    assert fake.stored["metadata"]["labels"][names.LABEL_NODE] == "node-a"
    assert fake.stored["spec"]["holderIdentity"] == "node-a"
