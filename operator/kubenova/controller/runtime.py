"""The controller's running parts: API client, store, work queue, and the reconcile glue.

reconcile(key): observe (store) -> decide (pure) -> [schedule under the lock] -> apply.
Scheduling decisions are serialised by one lock, and the claim a decision makes is
persisted, and put in the store, before the lock is released.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from kubenova import faults
from kubenova import settings as settings_mod
from kubenova.api import flavor, instance, migration, names
from kubenova.controller import store as store_mod
from kubenova.controller import telemetry
from kubenova.kube import events, objects, workqueue
from kubenova.lifecycle import instance as lifecycle
from kubenova.lifecycle import plan as plan_mod
from kubenova.observability import logs, metrics, probes
from kubenova.scheduling import scheduler

log = logging.getLogger(__name__)

HYPERVISOR_SYNC_SECONDS = 2.0  # up/down is re-judged at least this often
# Claims that change within this long are written together. Usage is for people and
# dashboards (decisions use the claims in memory), so a second's delay costs nothing and
# folds a resize's claim and release on a node, and a burst's, into fewer writes.
USAGE_DEBOUNCE_SECONDS = 1.0


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Runtime:
    def __init__(self, api: client.ApiClient, cfg: settings_mod.Controller) -> None:
        self.api = api
        self.cfg = cfg
        self.objs = objects.Objects(api)
        self.store = store_mod.Store(scheduler.Weigher(cfg.weigher))
        self.events = events.Recorder(api, "kubenova-controller", "controller")
        self.queue = workqueue.WorkQueue(self.reconcile, workers=cfg.workers, name="controller")
        self.scheduling = asyncio.Lock()
        self.settings = lifecycle.Settings(
            confirm_window_seconds=cfg.resize_confirm_window_seconds,
            allow_resize_to_same_host=cfg.allow_resize_to_same_host,
            retry_base_seconds=cfg.retry_base_seconds,
            retry_cap_seconds=cfg.retry_cap_seconds,
        )
        self.tasks: list[asyncio.Task[None]] = []
        self.usage_changed = asyncio.Event()
        self.waiting: set[str] = set()  # instances waiting for a host or a flavor
        self.telemetry = telemetry.Telemetry()

    async def prime(self) -> None:
        """Load every object before the first decision. kopf delivers the initial listing
        kind by kind; deciding for an Instance before its Migration has arrived would
        take a resize in flight for an idle instance (found by the controller-kill tests)."""
        for kind in (objects.FLAVOR, objects.HYPERVISOR, objects.MIGRATION, objects.INSTANCE):
            items, _ = await self.objs.list(kind)
            for body in items:
                self.observe(kind.kind, None, {"kind": kind.kind, **body})

    def start(self) -> None:
        self.tasks += [
            asyncio.create_task(self.queue.run()),
            asyncio.create_task(self._hypervisor_loop()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.events.close()
        await self.api.close()

    # --- watch events (from kopf) ------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        key = objects.key(body)
        if event_type == "DELETED":
            self.store.remove(kind, key)
        else:
            self.store.put(kind, body)
        if kind in ("Instance", "Migration"):
            self.usage_changed.set()
        if kind == "Instance":
            self.queue.add(key)
            self.telemetry.saw_instance(key, None if event_type == "DELETED" else body)
            # Kept as a set: heartbeats arrive from every node every few seconds, and a
            # scan of all instances on each would grow with the fleet.
            if event_type != "DELETED" and _waiting(body):
                self.waiting.add(key)
            else:
                self.waiting.discard(key)
        elif kind == "Migration":
            self.queue.add(self.store.instance_key_of(body))
        elif kind in ("Hypervisor", "Flavor"):
            # Capacity or flavors changed: instances waiting for a host or a flavor retry now.
            for k in self.waiting:
                self.queue.add(k)

    # --- reconcile ---------------------------------------------------------------------------

    def observed(self, body: dict[str, Any]) -> lifecycle.Observed:
        inst = instance.Instance.model_validate(body)
        mig_body = self.store.migration_for(body)
        flavor_body = self.store.get("Flavor", inst.spec.flavor)
        t = now()
        mig = migration.Migration.model_validate(mig_body) if mig_body else None
        # Up or down is asked only for the nodes a decision waits for: building every Host
        # for each reconcile would cost O(hypervisors) on the hot path for nothing.
        nodes = _waited_for(inst, mig)
        up = frozenset(
            n for n in nodes if self.store.is_up(n, t, self.cfg.service_down_time_seconds)
        )
        seen = {n: s for n in nodes if (s := self.store.last_heartbeat(n)) is not None}
        return lifecycle.Observed(
            instance=inst,
            migration=mig,
            flavor=flavor.FlavorSpec.model_validate(flavor_body["spec"]) if flavor_body else None,
            now=t,
            settings=self.settings,
            hosts_up=up,
            last_seen=seen,
        )

    async def reconcile(self, key: str) -> float | None:
        body = self.store.get("Instance", key)
        if body is None:
            return None
        logs.bind_instance(body)
        obs = self.observed(body)
        plan = lifecycle.decide(obs)
        if plan.need_placement is None:
            await self.apply(body, obs, plan)
            return plan.requeue_after
        await self.scheduling.acquire()
        held = True

        def claimed() -> None:
            """The claim is persisted and in the store: the next decision may run. The
            rest of the plan's writes (phase, labels, events) need not hold the lock."""
            nonlocal held
            if held:
                held = False
                self.scheduling.release()

        try:
            body = self.store.get("Instance", key) or body  # may have moved while we waited
            obs = self.observed(body)
            plan = lifecycle.decide(obs)
            if plan.need_placement is not None:
                started = time.perf_counter()
                decision = metrics.scheduled(
                    started,
                    self.store.select(
                        plan.need_placement, obs.now, self.cfg.service_down_time_seconds
                    ),
                )
                plan = lifecycle.decide(obs, decision)
            await self.apply(body, obs, plan, claimed=claimed)
        finally:
            claimed()
        return plan.requeue_after

    async def apply(
        self,
        body: dict[str, Any],
        obs: lifecycle.Observed,
        plan: plan_mod.Plan,
        *,
        claimed: Callable[[], None] = lambda: None,
    ) -> None:
        """Write the plan in a fixed order; `claimed` is called once the write that holds
        the plan's claim (the Migration, or a build's status.node) is in the store."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        status = dict(plan.status or {})
        # Fault points are named by what the plan does (its first event) and the write.
        step = plan.events[0].reason if plan.events else "reconcile"
        try:
            if plan.create_migration is not None:
                created = await self._create_migration(
                    body, plan.create_migration, step, claimed=claimed
                )
                status["migrationRef"] = created["metadata"]["name"]
            if plan.migration_phase is not None:
                await self._advance(ns, plan.migration_phase)
                faults.point("controller", f"{step}:migration-{plan.migration_phase.new.value}")
            if plan.main:
                self.store.put(
                    "Instance", await self.objs.patch(objects.INSTANCE, ns, name, plan.main)
                )
                faults.point("controller", f"{step}:main")
            if status:
                self.store.put(
                    "Instance",
                    await self.objs.patch(
                        objects.INSTANCE, ns, name, {"status": status}, status=True
                    ),
                )
                faults.point("controller", f"{step}:status")
        except objects.ConflictError as exc:
            log.info("%s/%s: conflict, will look again: %s", ns, name, exc)
            self.queue.add_after(f"{ns}/{name}", 0.1)
            return
        except objects.NotFoundError:
            return
        claimed()
        self.usage_changed.set()
        self.telemetry.applied(f"{ns}/{name}", obs.migration, plan)
        for event in plan.events:
            self.events.post(body, event.type.value, event.reason, event.message)
        if plan.remove_finalizer:
            await self._remove_finalizer(body)

    async def _create_migration(
        self,
        inst: dict[str, Any],
        order: plan_mod.MigrationOrder,
        step: str,
        *,
        claimed: Callable[[], None],
    ) -> dict[str, Any]:
        meta = inst["metadata"]
        manifest = {
            "apiVersion": names.API_VERSION,
            "kind": "Migration",
            "metadata": {
                "generateName": order.name,
                "namespace": meta["namespace"],
                "labels": order.labels,
                "ownerReferences": [
                    {
                        "apiVersion": names.API_VERSION,
                        "kind": "Instance",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": order.spec.to_wire(),
        }
        created = await self.objs.create(objects.MIGRATION, meta["namespace"], manifest)
        self.store.put("Migration", created)  # the claim is now in the store and the API
        claimed()
        faults.point("controller", f"{step}:migration-created")
        started = await self.objs.set_phase(
            objects.MIGRATION,
            meta["namespace"],
            created["metadata"]["name"],
            expected=None,
            status={"phase": migration.MigrationPhase.PRE_MIGRATING.value},
            transition={
                "phase": migration.MigrationPhase.PRE_MIGRATING.value,
                "time": now().isoformat(),
            },
            resource_version=created["metadata"]["resourceVersion"],
        )
        self.store.put("Migration", started)
        faults.point("controller", f"{step}:migration-started")
        return started

    async def _advance(self, namespace: str, change: plan_mod.PhaseChange) -> None:
        current = self.store.get("Migration", f"{namespace}/{change.name}")
        transitions = (current or {}).get("status", {}).get("phaseTransitions", [])
        body = await self.objs.set_phase(
            objects.MIGRATION,
            namespace,
            change.name,
            expected=change.old.value if change.old else None,
            status={"phase": change.new.value, **(change.status or {})},
            transition={"phase": change.new.value, "time": now().isoformat()},
            resource_version=current["metadata"]["resourceVersion"] if current else None,
            drop_oldest=max(0, len(transitions) + 1 - migration.MAX_PHASE_TRANSITIONS),
        )
        self.store.put("Migration", body)

    async def _remove_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        remaining = [f for f in meta.get("finalizers", []) if f != names.FINALIZER]
        patch = {"metadata": {"finalizers": remaining, "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.objs.patch(objects.INSTANCE, meta["namespace"], meta["name"], patch)
        except (objects.ConflictError, objects.NotFoundError):
            self.queue.add_after(objects.key(body), 0.1)

    # --- hypervisors: up/down and usage --------------------------------------------------------

    async def _hypervisor_loop(self) -> None:
        """Usage of the nodes whose claims changed, soon after they change; every node's
        up/down state (and usage) every HYPERVISOR_SYNC_SECONDS. Only the changed nodes on
        each change: a pass over every hypervisor per debounce was the controller's largest
        own CPU cost with 1,000 resizes over 200 nodes (profile in docs/benchmarks.md)."""
        loop = asyncio.get_running_loop()
        last_full = 0.0
        while True:
            probes.HEALTH.beat("hypervisor-sync", within=60)  # a sync may take long at scale
            try:
                await asyncio.wait_for(self.usage_changed.wait(), HYPERVISOR_SYNC_SECONDS)
                await asyncio.sleep(USAGE_DEBOUNCE_SECONDS)  # a change woke us: gather more
            except TimeoutError:
                pass
            self.usage_changed.clear()
            changed = self.store.take_changed()
            full = loop.time() - last_full >= HYPERVISOR_SYNC_SECONDS
            if full:
                last_full = loop.time()
            try:
                await self.sync_hypervisors(None if full else changed)
            except Exception:
                self.store.give_back_changed(changed)
                log.exception("hypervisor sync failed")

    async def sync_hypervisors(self, only: set[str] | None = None) -> None:
        """Write state and usage where they differ from the store; `only` these nodes."""
        t = now()
        hypervisors = self.store.objects["Hypervisor"]
        for name in list(hypervisors) if only is None else sorted(only):
            hv = hypervisors.get(name)
            if hv is None:
                continue
            report = hv.get("status", {}).get("agent")
            used = self.store.used.get(name)
            wanted = {
                "state": (
                    "up"
                    if report and store_mod.is_up(report, t, self.cfg.service_down_time_seconds)
                    else "down"
                ),
                "usage": {
                    "vcpus": used.vcpus if used else 0,
                    "memoryMiB": used.memory_mib if used else 0,
                    "diskGiB": used.disk_gib if used else 0,
                    "instances": self.store.counts.get(name, 0),
                },
            }
            current = {k: hv.get("status", {}).get(k) for k in wanted}
            if current != wanted:
                self.store.put(
                    "Hypervisor",
                    await self.objs.patch(
                        objects.HYPERVISOR, None, name, {"status": wanted}, status=True
                    ),
                )


def _waited_for(inst: instance.Instance, mig: migration.Migration | None) -> set[str]:
    """The nodes whose up/down a decision about `inst` depends on: those a deletion waits
    for, and those a confirm or a revert waits for."""
    nodes: set[str] = set()
    if inst.metadata.deletion_timestamp is not None:
        labels = inst.metadata.labels
        nodes |= {
            inst.status.node or "",
            labels.get(names.LABEL_SOURCE_NODE, ""),
            labels.get(names.LABEL_DEST_NODE, ""),
        }
    if mig is not None and (
        inst.metadata.deletion_timestamp is not None
        or mig.status.phase
        in (migration.MigrationPhase.CONFIRMING, migration.MigrationPhase.REVERTING)
    ):
        nodes |= {mig.spec.source_node, mig.spec.dest_node}
    return nodes - {""}


def _waiting(inst: dict[str, Any]) -> bool:
    """Waiting for a host or a flavor: a condition says so."""
    for c in inst.get("status", {}).get("conditions", []):
        if c.get("reason") in ("NoValidHost", "FlavorNotFound", "FlavorDisabled") and (
            (c["type"] == "ResizeFailed" and c["status"] == "True")
            or (c["type"] in ("Scheduled", "FlavorValid") and c["status"] == "False")
        ):
            return True
        if c["type"] == "NodeDown" and c["status"] == "True":  # retried when hypervisors change
            return True
    return False
