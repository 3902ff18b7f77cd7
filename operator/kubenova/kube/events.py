"""Kubernetes Events on kubenova objects: what `kubectl describe` and `kubectl events` show."""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.api import names

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, api: client.ApiClient, component: str, instance: str) -> None:
        self.core: Any = client.CoreV1Api(api)  # Any: we send a plain dict, not a CoreV1Event
        self.component = component
        self.instance = instance

    async def post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post one event; failures are logged, never raised (events are best effort)."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC)
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
        try:
            await self.core.create_namespaced_event(namespace, body)
        except ApiException as exc:
            log.warning("event %s on %s not posted: %s", reason, meta["name"], exc.reason)
