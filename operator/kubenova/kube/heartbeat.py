"""A node's heartbeat: one coordination.k8s.io Lease per node, renewed by its agent (what
the kubelet does in kube-node-lease since Kubernetes 1.17).

A renew is one small write (the Lease), not a status patch of the Hypervisor: nothing else
watches it, so a heartbeat wakes only the controller's Lease informer, and the controller
judges up or down by when it *observed* the Lease change, on its own monotonic clock. The
renewTime in the Lease is the agent's wall clock, written for people and never compared.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova import clock
from kubenova.api import names

log = logging.getLogger(__name__)

PREFIX = "kubenova-node-"


def lease_name(node: str) -> str:
    return PREFIX + node


def node_of(lease: dict[str, Any]) -> str | None:
    """The node a heartbeat Lease belongs to (its label), or None for any other Lease."""
    return (lease.get("metadata", {}).get("labels") or {}).get(names.LABEL_NODE)


def _micro(t: Any) -> str:
    return str(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))  # MicroTime, as the Lease API wants


class NodeLease:
    def __init__(self, api: client.ApiClient, *, namespace: str, node: str, every: float) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.node = node
        self.every = every
        self.version: str | None = None  # resourceVersion of our last write's answer

    def _body(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": lease_name(self.node),
            "namespace": self.namespace,
            "labels": {names.LABEL_NODE: self.node, "app.kubernetes.io/name": "kubenova"},
        }
        if self.version:
            meta["resourceVersion"] = self.version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.node,
                # For people reading it: the controller's serviceDownTimeSeconds decides.
                "leaseDurationSeconds": max(1, round(self.every * 4)),
                "renewTime": _micro(clock.now()),
            },
        }

    async def renew(self) -> None:
        """One write when our last answer is current; a read first when it is not."""
        name = lease_name(self.node)
        try:
            if self.version is None:
                raise LookupError
            answer = await self.coordination.replace_namespaced_lease(
                name, self.namespace, self._body()
            )
        except (LookupError, ApiException) as exc:
            if isinstance(exc, ApiException) and exc.status not in (404, 409):
                raise
            answer = await self._read_then_write(name)
        self.version = answer.metadata.resource_version

    async def _read_then_write(self, name: str) -> Any:
        try:
            current = await self.coordination.read_namespaced_lease(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.version = None
            return await self.coordination.create_namespaced_lease(self.namespace, self._body())
        self.version = current.metadata.resource_version
        return await self.coordination.replace_namespaced_lease(name, self.namespace, self._body())
