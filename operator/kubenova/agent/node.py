"""The node agent: watches only its node's objects, runs driver steps, reports back.

Selection is server-side (label selectors): Instances labelled node / source-node /
dest-node = this node, and Migrations labelled source-node / dest-node = this node.
Every change of one of them queues the Instance it concerns, and every instance is queued
again each `resync_seconds`; `steps.reconcile` then re-derives what this node must do
from the objects and the driver (level-triggered). Nothing here destroys a guest on the
word of a label-selected cache: the orphan sweep looks Instances up without labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pathlib
import ssl
import time
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from kubenova import settings as settings_mod
from kubenova.agent import certificate, steps, transfer
from kubenova.api import migration, names
from kubenova.drivers import base
from kubenova.kube import heartbeat, informer, objects, workqueue
from kubenova.lifecycle import duties, stages
from kubenova.observability import probes

log = logging.getLogger(__name__)

VERSION = "0.1.0"
DEFERRAL_CAP_SECONDS = 30.0  # a source restarted by a rollout is back within this


class Node:
    def __init__(self, api: client.ApiClient, cfg: settings_mod.Agent, driver: base.Driver) -> None:
        self.api = api
        self.cfg = cfg
        self.name = cfg.node
        self.driver = driver
        self.objs = objects.Objects(api)
        self.queue = workqueue.WorkQueue(
            self._reconcile, workers=cfg.workers, name=f"agent/{self.name}"
        )
        self.instances = [
            informer.Informer(
                self.objs, objects.INSTANCE, f"{label}={self.name}", self._on_instance
            )
            for label in (names.LABEL_NODE, names.LABEL_SOURCE_NODE, names.LABEL_DEST_NODE)
        ]
        self.migrations = [
            informer.Informer(
                self.objs, objects.MIGRATION, f"{label}={self.name}", self._on_migration
            )
            for label in (names.LABEL_SOURCE_NODE, names.LABEL_DEST_NODE)
        ]
        self._deferrals: dict[str, int] = {}  # migration uid -> steps deferred in a row
        self.lease = heartbeat.NodeLease(
            api,
            namespace=cfg.heartbeat_namespace,
            node=self.name,
            every=cfg.heartbeat_interval_seconds,
        )
        self._reported: dict[str, Any] | None = None  # the status.agent last written
        self._reported_at = 0.0

    def backoff(self, migration_uid: str) -> float:
        """Seconds until a deferred step is tried again: 1, 2, 4 ... capped at 30."""
        n = self._deferrals.get(migration_uid, 0)
        self._deferrals[migration_uid] = n + 1
        return float(min(DEFERRAL_CAP_SECONDS, 2**n))

    def succeeded(self, migration_uid: str) -> None:
        self._deferrals.pop(migration_uid, None)

    # --- selection -------------------------------------------------------------------------

    def _on_instance(self, key: str, body: dict[str, Any] | None) -> None:
        self.queue.add(key)

    def _on_migration(self, key: str, body: dict[str, Any] | None) -> None:
        if body is not None:
            self.queue.add(f"{body['metadata']['namespace']}/{body['spec']['instanceName']}")

    def instance(self, key: str) -> dict[str, Any] | None:
        """The newest copy of an Instance among the three selections."""
        found = [inf.cache[key] for inf in self.instances if key in inf.cache]
        newest: dict[str, Any] | None = None
        for body in found:
            if objects.newer(newest, body):
                newest = body
        return newest

    def migrations_of(self, namespace: str, name: str) -> list[migration.Migration]:
        seen: dict[str, dict[str, Any]] = {}
        for inf in self.migrations:
            for k, body in inf.cache.items():
                meta, spec = body["metadata"], body["spec"]
                mine = meta["namespace"] == namespace and spec["instanceName"] == name
                if mine and objects.newer(seen.get(k), body):
                    seen[k] = body
        return [migration.Migration.model_validate(b) for b in seen.values()]

    @property
    def events_received(self) -> int:
        """Watch events the API server sent this node (bookmarks excluded)."""
        return sum(
            n
            for inf in (*self.instances, *self.migrations)
            for type_, n in inf.received.items()
            if type_ != "BOOKMARK"
        )

    def remember(self, body: dict[str, Any]) -> None:
        """Put our own write's answer in the caches that select it."""
        labels = body["metadata"].get("labels", {})
        group = self.instances if body.get("kind") == "Instance" else self.migrations
        for inf in group:
            label = inf.selector.split("=", 1)[0]
            if labels.get(label) == self.name:
                inf.put(body)

    # --- running ---------------------------------------------------------------------------

    @property
    def transfer_endpoint(self) -> str:
        port = self.cfg.transfer_port
        scheme = "https" if self.cfg.transfer_ca_file else "http"
        return f"{scheme}://{self.cfg.transfer_host}:{port}" if port else ""

    @functools.cached_property
    def transfer_client_tls(self) -> ssl.SSLContext | None:
        """How this node verifies a source: the transfer CA, or None (no TLS)."""
        ca = self.cfg.transfer_ca_file
        return certificate.client_context(ca) if ca else None

    async def offer(self, namespace: str, name: str, part: transfer.Part) -> transfer.Offer | None:
        """What this node serves for a migration: its disk once handed over, or a
        pre-copy's frozen base while the guest runs on; the delta once it is off."""
        key = f"{namespace}/{name}"
        body = next((inf.cache[key] for inf in self.migrations if key in inf.cache), None)
        if body is None:
            return None
        mig = migration.Migration.model_validate(body)
        if not stages.serves(mig, self.name, part):
            return None
        path = self.driver.disk_path(mig.spec.instance_uuid, migration=mig.metadata.uid, part=part)
        try:
            token = self.transfer_token(mig.metadata.uid)
        except transfer.TransferError as exc:
            log.error("agent %s: cannot serve %s/%s: %s", self.name, namespace, name, exc)
            return None
        return transfer.Offer(path=path, token=token) if path else None

    def transfer_token(self, migration_uid: str) -> str:
        """The migration's bearer token. The key file is read each time (one small read per
        transfer), so a rotated key (a Secret volume is updated in place) is used at once."""
        path = self.cfg.transfer_key_file
        try:
            key = pathlib.Path(path).read_bytes().strip() if path else b""
        except OSError as exc:
            raise transfer.TransferError(f"transfer key {path}: {exc.strerror}") from exc
        return transfer.token(key, migration_uid)

    async def _serve_disks(self) -> None:
        tls, renewing = None, None
        if self.cfg.transfer_ca_file:
            # A certificate for this node from the controller's signer first: until then a
            # destination's connection is refused, which it retries (transient).
            serving = certificate.ServingCertificate(
                self.api, self.name, self.cfg.transfer_cert_seconds
            )
            tls = await serving.obtain()
            renewing = asyncio.create_task(serving.renew_forever())
        runner = web.AppRunner(transfer.app(self.offer), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.transfer_host, self.cfg.transfer_port, ssl_context=tls)
        await site.start()
        log.info("agent %s: serving disks at %s", self.name, self.transfer_endpoint)
        try:
            await (renewing or asyncio.Event().wait())
        finally:
            if renewing is not None:
                renewing.cancel()
            await runner.cleanup()

    async def run(self) -> None:
        await self.register()
        # The heartbeat says the agent lives, from the start (as the kubelet's): a slow first
        # list must not make the node look down.
        tasks = [asyncio.create_task(self._heartbeats())]
        tasks += [asyncio.create_task(inf.run()) for inf in (*self.instances, *self.migrations)]
        await asyncio.gather(*(inf.synced.wait() for inf in (*self.instances, *self.migrations)))
        log.info(
            "agent %s: caches synced (%d instances)",
            self.name,
            len({k for inf in self.instances for k in inf.cache}),
        )
        if self.cfg.transfer_port:
            tasks.append(asyncio.create_task(self._serve_disks()))
        tasks += [
            asyncio.create_task(self.queue.run()),
            asyncio.create_task(self._sweep_orphans()),
            asyncio.create_task(self._resync()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def register(self) -> None:
        """Create this node's Hypervisor (spec defaults from settings) and report once."""
        if await self.objs.get(objects.HYPERVISOR, None, self.name) is None:
            body = {
                "apiVersion": names.API_VERSION,
                "kind": "Hypervisor",
                "metadata": {"name": self.name},
                "spec": {
                    "allocationRatios": {
                        "cpu": self.cfg.cpu_allocation_ratio,
                        "memory": self.cfg.memory_allocation_ratio,
                        "disk": self.cfg.disk_allocation_ratio,
                    }
                },
            }
            # ConflictError: another incarnation of this agent created it first.
            with contextlib.suppress(objects.ConflictError):
                await self.objs.create(objects.HYPERVISOR, None, body)
        await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew the node's Lease; report status.agent when it changed or is due."""
        await self.lease.renew()
        cap = await self.driver.capacity()
        report = {
            "driver": self.driver.name,
            "capacity": {"vcpus": cap.vcpus, "memoryMiB": cap.memory_mib, "diskGiB": cap.disk_gib},
            "guestOverhead": {
                "memoryMiB": self.driver.guest_overhead.memory_mib,
                "memoryMiBPerVCPU": self.driver.guest_overhead.memory_mib_per_vcpu,
                "memoryMiBPerGiB": self.driver.guest_overhead.memory_mib_per_gib,
            },
            "version": VERSION,
            "transferEndpoint": self.transfer_endpoint,
        }
        due = time.monotonic() - self._reported_at >= self.cfg.status_report_seconds
        if report == self._reported and not due:
            return
        await self.objs.patch(
            objects.HYPERVISOR,
            None,
            self.name,
            {"status": {"agent": {**report, "heartbeatTime": steps.now().isoformat()}}},
            status=True,
        )
        self._reported, self._reported_at = report, time.monotonic()

    async def _heartbeats(self) -> None:
        while True:
            # Beats even when the API server is away: an outage is no reason to restart.
            interval = self.cfg.heartbeat_interval_seconds
            probes.HEALTH.beat("heartbeat", within=max(60.0, 6 * interval))
            await asyncio.sleep(self.cfg.heartbeat_interval_seconds)
            try:
                await self.heartbeat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _resync(self) -> None:
        """Every instance this node selects is reconciled again periodically: a guest that
        shut down or crashed by itself is reported within one period (Nova's power sync)."""
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            for key in {k for inf in self.instances for k in inf.cache}:
                self.queue.add(key)

    async def _sweep_orphans(self) -> None:
        """Nova's running-deleted cleanup, made safe: see `sweep`. A failing sweep is
        logged and tried again next period; it never stops the agent."""
        suspects: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.cfg.orphan_sweep_seconds)
            try:
                await self.sweep(suspects, time.monotonic())
            except Exception:
                log.exception(
                    "agent %s: orphan sweep failed; next in %ss",
                    self.name,
                    self.cfg.orphan_sweep_seconds,
                )

    async def sweep(self, suspects: dict[str, float], now: float) -> None:
        """Quarantine what this node holds for Instances that no longer exist (deleted while
        the agent or its node was down). Candidates are only guests carrying kubenova's
        marker; each is looked up without labels before anything moves (duties.orphan_verdict).
        `suspects` maps a uuid to when a sweep first found its Instance gone."""
        selected = {
            b.get("status", {}).get("uuid") or b["metadata"]["uid"]
            for inf in self.instances
            for b in inf.cache.values()
        } | {b["spec"]["instanceUuid"] for inf in self.migrations for b in inf.cache.values()}
        for uuid in await self.driver.list_guests():
            mine = uuid in selected
            exists = not mine and await self._instance_exists(uuid)
            verdict = duties.orphan_verdict(
                selected=mine,
                exists=exists,
                first_absent=suspects.get(uuid),
                now=now,
                grace=self.cfg.orphan_grace_seconds,
            )
            if verdict is duties.Verdict.KEEP:
                if exists:
                    log.warning(
                        "agent %s: guest %s (%s) is not selected by this node's labels, but "
                        "its Instance exists: left alone",
                        self.name,
                        uuid,
                        self.driver.owner(uuid),
                    )
                suspects.pop(uuid, None)
            elif verdict is duties.Verdict.SUSPECT:
                if uuid not in suspects:
                    log.info(
                        "agent %s: guest %s has no Instance; looking again in %ss",
                        self.name,
                        uuid,
                        self.cfg.orphan_grace_seconds,
                    )
                suspects.setdefault(uuid, now)
            else:
                where = await self.driver.quarantine(uuid)
                suspects.pop(uuid, None)
                log.warning(
                    "agent %s: orphan %s (%s) quarantined: %s",
                    self.name,
                    uuid,
                    self.driver.owner(uuid),
                    [str(p) for p in where],
                )
        for name in await self.driver.purge_quarantine(self.cfg.quarantine_keep_seconds):
            log.info("agent %s: quarantined %s purged", self.name, name)

    async def _instance_exists(self, uuid: str) -> bool:
        """Whether an Instance with this uuid exists, by a lookup that does not depend on
        labels: a GET of the Instance the guest's marker names, else a full list."""
        owner = self.driver.owner(uuid) or ""
        namespace, _, name = owner.partition("/")
        if namespace and name:
            body = await self.objs.get(objects.INSTANCE, namespace, name)
            found = [body] if body is not None else []
        else:
            found, _ = await self.objs.list(objects.INSTANCE)
        return any((b.get("status", {}).get("uuid") or b["metadata"]["uid"]) == uuid for b in found)

    async def _reconcile(self, key: str) -> float | None:
        return await steps.reconcile(self, key)
