"""The controller's running parts: API client, store, work queue, and the reconcile glue.

reconcile(key): observe (store) -> decide (pure) -> [schedule under the lock] -> apply.
Scheduling decisions are serialised by one lock, and the claim a decision makes is
persisted, and put in the store, before the lock is released.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from kubenova import clock, faults
from kubenova import settings as settings_mod
from kubenova.api import flavor, instance, migration, names
from kubenova.controller import store as store_mod
from kubenova.controller import telemetry
from kubenova.kube import events, heartbeat, informer, objects, workqueue
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
# A create whose answer was lost (connection reset, timeout) is sent again at once, by the
# same name: the second meets the first (409) and adopts it.
CREATE_ATTEMPTS = 3


def now() -> datetime.datetime:
    return clock.now()


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
            live_resize=cfg.live_resize,
            pre_copy=cfg.pre_copy,
            retry_base_seconds=cfg.retry_base_seconds,
            retry_cap_seconds=cfg.retry_cap_seconds,
        )
        self.tasks: list[asyncio.Task[None]] = []
        self.usage_changed = asyncio.Event()
        self.waiting: set[str] = set()  # instances waiting for a host or a flavor
        self.telemetry = telemetry.Telemetry()
        self.informers: list[informer.Informer] = []
        self.watchers: list[asyncio.Task[None]] = []

    def watch(self) -> None:
        """One informer per kind, in every replica: a standby keeps a warm store (it answers
        the webhook and is ready to lead), and every relist replaces what it lists, so an
        object deleted during a watch gap leaves the store (and frees its claims)."""
        for kind in (objects.FLAVOR, objects.HYPERVISOR, objects.MIGRATION, objects.INSTANCE):
            on_change: informer.OnChange = functools.partial(self.observe, kind.kind)
            if lag := faults.delay("controller", f"{kind.plural}-watch"):
                on_change = _lagging(lag, on_change)  # a watch that lags (tests)
            inf = informer.Informer(
                self.objs, kind, "", on_change, transform=store_mod.without_managed_fields
            )
            self.informers.append(inf)
            self.watchers.append(asyncio.create_task(inf.run(), name=f"{kind.kind} informer"))
        # The nodes' heartbeats: only when a Lease changes is a node heard from.
        leases = informer.Informer(
            None,
            objects.LEASE,
            names.LABEL_NODE,
            self.observe_lease,
            source=informer.Leases(self.api, self.cfg.lease_namespace, names.LABEL_NODE),
        )
        self.informers.append(leases)
        self.watchers.append(asyncio.create_task(leases.run(), name="Lease informer"))

    async def synced(self) -> None:
        """Every kind listed once. Decisions wait for it: deciding for an Instance before
        its Migration has arrived would take a resize in flight for an idle instance."""
        await asyncio.gather(*(inf.synced.wait() for inf in self.informers))

    async def resync(self) -> None:
        """List every kind again: a new leader must not decide on a watch that lags the
        writes its predecessor made just before it stopped."""
        for inf in self.informers:
            await inf.resync()

    def start(self) -> None:
        self.tasks += [
            asyncio.create_task(self.queue.run()),
            asyncio.create_task(self._hypervisor_loop()),
        ]

    async def stop(self) -> None:
        for task in [*self.tasks, *self.watchers]:
            task.cancel()
        await self.events.close()
        await self.api.close()

    # --- watch events (from the informers) ---------------------------------------------------

    def observe(self, kind: str, key: str, body: dict[str, Any] | None) -> None:
        old = self.store.get(kind, key)
        if body is None:
            self.store.remove(kind, key)
        else:
            self.store.put(kind, body)
        if kind in ("Instance", "Migration"):
            self.usage_changed.set()
        if kind == "Instance":
            self.queue.add(key)
            self.telemetry.saw_instance(key, body)
            # Kept as a set: heartbeats arrive from every node every few seconds, and a
            # scan of all instances on each would grow with the fleet.
            if body is not None and _waiting(body):
                self.waiting.add(key)
            else:
                self.waiting.discard(key)
        elif kind == "Migration":
            if (mig := body or old) is not None:
                self.queue.add(self.store.instance_key_of(mig))
        elif kind == "Flavor" or _schedulable(old) != _schedulable(body):
            # Flavors, or capacity, ratios, labels, disabled or up/down changed (not a mere
            # heartbeat): instances waiting for a host or a flavor retry now.
            self.wake_waiting()

    def observe_lease(self, key: str, body: dict[str, Any] | None) -> None:
        """A node Lease was renewed (a deleted one says nothing: the node goes quiet)."""
        node = heartbeat.node_of(body) if body is not None else None
        if node is None:
            return
        was_up = self.store.is_up(node, self.cfg.service_down_time_seconds)
        self.store.heard_from(node)
        if not was_up:
            self.usage_changed.set()  # the hypervisor loop writes state=up and wakes waiters

    def wake_waiting(self) -> None:
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
        up = frozenset(n for n in nodes if self.store.is_up(n, self.cfg.service_down_time_seconds))
        seen = {n: s for n in nodes if (s := self.store.last_heartbeat(n)) is not None}
        return lifecycle.Observed(
            instance=inst,
            migration=mig,
            flavor=flavor.FlavorSpec.model_validate(flavor_body["spec"]) if flavor_body else None,
            now=t,
            settings=self.settings,
            hosts_up=up,
            last_seen=seen,
            last_migration=self.store.last_migration(body),
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
        await self._refresh_flavor(body)  # outside the lock: placements do not queue on it
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
                    self.store.select(plan.need_placement, self.cfg.service_down_time_seconds),
                )
                plan = lifecycle.decide(obs, decision)
            await self.apply(body, obs, plan, claimed=claimed)
        finally:
            claimed()
        return plan.requeue_after

    async def _refresh_flavor(self, inst: dict[str, Any]) -> None:
        """Read the Instance's Flavor from the API server before a placement: the plan
        persists its sizes (a Migration's newFlavor, a build's status.flavor), and the
        store's copy may lag a Flavor replaced meanwhile (its watch behind, or relisting
        after a gap while another kind's relist already freed the room: found by the chaos
        suite). The other inputs only make a decision wait; this one would be kept."""
        name = inst["spec"]["flavor"]
        held = self.store.get("Flavor", name)
        fresh = await self.objs.get(objects.FLAVOR, None, name)
        if fresh is None:
            if held is not None:
                self.observe("Flavor", name, None)
            return
        version = (held or {}).get("metadata", {}).get("resourceVersion")
        if fresh["metadata"].get("resourceVersion") != version and objects.newer(held, fresh):
            self.observe("Flavor", name, fresh)  # as its watch event will: waiters look again

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
            await self._evict_gone(body, plan)
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
                "name": order.name,
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
        created = await self._create_or_adopt(inst, manifest)
        self.store.put("Migration", created)  # the claim is now in the store and the API
        claimed()
        faults.point("controller", f"{step}:migration-created")
        if created.get("status", {}).get("phase"):  # adopted, already started
            return created
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

    async def _evict_gone(self, inst: dict[str, Any], plan: plan_mod.Plan) -> None:
        """A write found its object gone: drop it from the store now, with its claims,
        rather than wait for a watch event that a watch gap may never deliver."""
        ns, name = inst["metadata"]["namespace"], inst["metadata"]["name"]
        gone = [(objects.INSTANCE, name)]
        if plan.migration_phase is not None:
            gone.append((objects.MIGRATION, plan.migration_phase.name))
        for kind, obj in gone:
            if await self.objs.get(kind, ns, obj) is None:
                log.info("%s %s/%s is gone: dropped from the store", kind.kind, ns, obj)
                self.observe(kind.kind, f"{ns}/{obj}", None)

    async def _create_or_adopt(
        self, inst: dict[str, Any], manifest: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the Migration; if its name exists, it is our own earlier attempt whose
        answer was lost (the name holds the instance's uid and a sequence the controller
        alone hands out): adopt it, unless it is not ours or already over."""
        ns, name = inst["metadata"]["namespace"], manifest["metadata"]["name"]
        for attempt in range(CREATE_ATTEMPTS):
            try:
                created = await self.objs.create(objects.MIGRATION, ns, manifest)
                if faults.fail_once("controller", "create-response-lost"):
                    raise ConnectionResetError("fault injection: the create's answer was lost")
                return created
            except objects.ConflictError:
                existing = await self.objs.get(objects.MIGRATION, ns, name)
                if existing is None or not _ours_in_flight(existing, inst):
                    raise  # an older one the store has not heard of yet: it will, look again
                if existing["spec"] == manifest["spec"]:
                    log.info("%s/%s: adopting migration %s (an earlier create)", ns, name, name)
                    return existing
                # Our earlier attempt, decided differently (another node): it holds the
                # claim now; the next reconcile carries it on (moving.decide).
                self.store.put("Migration", existing)
                raise
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                log.warning("%s/%s: create of migration %s: %r; again", ns, name, name, exc)
        raise AssertionError("unreachable")

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
        """Write state and usage where they differ from the store; `only` these nodes.
        A node that came up or went down, or whose claims shrank, wakes the instances
        waiting for a host (a heartbeat alone does not)."""
        hypervisors = self.store.objects["Hypervisor"]
        wake = False
        for name in list(hypervisors) if only is None else sorted(only):
            hv = hypervisors.get(name)
            if hv is None:
                continue
            report = hv.get("status", {}).get("agent")
            used = self.store.used.get(name)
            up = report and self.store.is_up(name, self.cfg.service_down_time_seconds)
            wanted = {
                "state": "up" if up else "down",
                "usage": {
                    "vcpus": used.vcpus if used else 0,
                    "memoryMiB": used.memory_mib if used else 0,
                    "diskGiB": used.disk_gib if used else 0,
                    "instances": self.store.counts.get(name, 0),
                    "overheadMiB": self.store.overhead_mib(name),
                },
            }
            current = {k: hv.get("status", {}).get(k) for k in wanted}
            if current != wanted:
                wake = wake or current["state"] != wanted["state"] or _shrank(current, wanted)
                self.store.put(
                    "Hypervisor",
                    await self.objs.patch(
                        objects.HYPERVISOR, None, name, {"status": wanted}, status=True
                    ),
                )
        if wake:
            self.wake_waiting()


def _shrank(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    before, after = current.get("usage") or {}, wanted["usage"]
    return any(after[k] < before.get(k, 0) for k in ("vcpus", "memoryMiB", "diskGiB"))


def _ours_in_flight(mig: dict[str, Any], inst: dict[str, Any]) -> bool:
    owners = {r.get("uid") for r in mig["metadata"].get("ownerReferences", [])}
    phase = mig.get("status", {}).get("phase")
    return inst["metadata"]["uid"] in owners and phase in (
        None,
        migration.MigrationPhase.PRE_MIGRATING.value,
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


def _lagging(seconds: float, on_change: informer.OnChange) -> informer.OnChange:
    def later(key: str, body: dict[str, Any] | None) -> None:
        asyncio.get_running_loop().call_later(seconds, on_change, key, body)

    return later


def _schedulable(hv: dict[str, Any] | None) -> tuple[Any, ...]:
    """What of a Hypervisor a waiting instance's retry depends on; not its heartbeat."""
    if hv is None:
        return ()
    spec, status = hv.get("spec", {}), hv.get("status", {})
    report = status.get("agent") or {}
    return (
        report.get("capacity"),
        report.get("guestOverhead"),
        spec.get("allocationRatios"),
        spec.get("disabled"),
        hv["metadata"].get("labels"),
        status.get("state"),
    )


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
