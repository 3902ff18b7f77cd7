"""Run the controller: kopf's watches and webhook, kubenova's runtime, leader election.

Every replica watches (warm store, validating webhook); only the Lease holder reconciles.
Every replica syncs its informers before contesting the lease, so a standby is ready (it
answers the webhook from a full view) and a rolling update does not wait on the lease; a
new leader lists everything once more before its first decision.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import os
import pathlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
import prometheus_client

from kubenova import settings as settings_mod
from kubenova.controller import app, runtime, signer, telemetry
from kubenova.kube import client, lease
from kubenova.observability import probes

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("webhook configuration not registered", exc_info=task.exception())


def _lost_leadership(task: asyncio.Task[None]) -> None:
    if task.cancelled():  # a clean shutdown
        return
    log.critical("leader election lost: exiting so that one controller acts at a time")
    logging.shutdown()
    os._exit(1)


def _failed_to_lead(task: asyncio.Task[None]) -> None:
    """lead() ends once the leader's tasks run; if it raised instead, say so and exit (a
    controller that never leads would stand by for ever, looking healthy)."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("could not start leading", exc_info=task.exception())
    logging.shutdown()
    os._exit(1)


async def _until_done(what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Retry `step` with capped backoff: the API server may be restarting."""
    for attempt in itertools.count():
        try:
            await step()
            return
        except Exception as exc:
            delay = min(10.0, 0.5 * 2**attempt)
            log.warning("%s failed: %r; again in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)


def _elector(api: Any, cfg: settings_mod.Controller) -> lease.LeaderElector | None:
    if not cfg.leader_election:
        return None
    return lease.LeaderElector(
        api,
        namespace=cfg.lease_namespace,
        name=cfg.lease_name,
        # One identity per process, as kube-controller-manager's (<host>_<uuid>): a replica
        # restarted under its old name while the old process still lives (paused, not yet
        # dead) must not take the old one's lease for its own.
        identity=f"{cfg.identity}_{uuid.uuid4().hex[:8]}",
        duration=cfg.lease_duration_seconds,
        # client-go's proportions (15 s lease, 10 s renew deadline, 2 s retry): a failed
        # renew is tried again four times before the deadline, not once (found by the chaos
        # suite: one failed renew at duration/3 lost the lease).
        renew_every=cfg.lease_duration_seconds * 2 / 15,
    )


def _watch_health(tasks: list[asyncio.Task[None]]) -> None:
    """/healthz fails when one of these ends; each named by what runs ("WorkQueue.run")."""
    for task in tasks:
        if task is not asyncio.current_task():
            probes.HEALTH.watch(getattr(task.get_coro(), "__qualname__", task.get_name()), task)


def _transfer_signer(api: Any, cfg: settings_mod.Controller) -> signer.Signer:
    policy = signer.Policy(
        agents=frozenset(cfg.transfer_agents),
        max_validity=datetime.timedelta(seconds=cfg.transfer_cert_max_seconds),
    )
    return signer.Signer(api, pathlib.Path(cfg.transfer_ca_dir), policy)


def _login_with(api: Any) -> None:
    """kopf connects as kubenova's own client does (its kubeconfig login reads only
    $KUBECONFIG; `--kubeconfig` must win)."""

    @kopf.on.login()
    def on_login_kubeconfig(**_: object) -> kopf.ConnectionInfo:
        c = api.configuration
        # kubernetes_asyncio keeps the header value: "Bearer <token>".
        token = c.api_key.get("BearerToken", "").removeprefix("Bearer ").strip()
        return kopf.ConnectionInfo(
            server=str(c.host),
            ca_path=c.ssl_ca_cert,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
            token=token or None,
            insecure=not c.verify_ssl,
        )


async def _lead(
    rt: runtime.Runtime,
    elector: lease.LeaderElector | None,
    primed: asyncio.Event,
    transfer: signer.Signer | None,
) -> None:
    """Once the store is primed: win the lease (if elected), list again, then act."""
    await rt.synced()
    primed.set()
    if elector is not None:
        await elector.acquire()
        holding = asyncio.create_task(elector.hold())
        holding.add_done_callback(_lost_leadership)
        rt.tasks.append(holding)
        # The informers may lag what the previous leader wrote just before it stopped.
        await _until_done("resync before leading", rt.resync)
    rt.start()
    if transfer is not None:  # the CA's key is mounted in the controller alone
        rt.tasks.append(asyncio.create_task(transfer.run()))
    _watch_health(rt.tasks)


async def run(cfg: settings_mod.Controller) -> None:
    api = await client.connect(cfg.kubeconfig, user_agent=f"kubenova-controller/{cfg.identity}")
    rt = runtime.Runtime(api, cfg)
    elector = _elector(api, cfg)
    if elector is not None:
        rt.objs.may_write = rt.events.may_write = elector.is_leader
    if cfg.webhook_port:
        app.register_webhook()
    managed_webhook = bool(cfg.webhook_port and cfg.webhook_managed)
    registering: set[asyncio.Task[None]] = set()  # a reference, so the task is not collected
    primed = asyncio.Event()
    probes.HEALTH.ready_when("store primed", primed.is_set)
    prometheus_client.REGISTRY.register(telemetry.StoreCollector(rt.store))

    # Read the CA now: a key it cannot read stops the controller at start, where the pod's
    # status shows it (found in kind: a 0400 Secret file, not the pod's user's).
    transfer = _transfer_signer(api, cfg) if cfg.transfer_ca_dir else None

    @kopf.on.startup()
    async def on_startup_controller(settings: kopf.OperatorSettings, **_: object) -> None:
        app.configure(settings, cfg)
        rt.watch()
        for task in rt.watchers:
            probes.HEALTH.watch(task.get_name(), task)
        leading = asyncio.create_task(_lead(rt, elector, primed, transfer))
        leading.add_done_callback(_failed_to_lead)
        rt.tasks.append(leading)
        if managed_webhook:  # one-shot: not among the tasks whose end fails /healthz
            task = asyncio.create_task(app.register_webhook_configuration(api, cfg))
            registering.add(task)
            task.add_done_callback(_log_failure)

    @kopf.on.cleanup()
    async def on_cleanup_controller(**_: object) -> None:
        if managed_webhook:
            await app.unregister_webhook_configuration(api, cfg)
        if elector is not None:
            await elector.release()
        await rt.stop()

    if cfg.kubeconfig:
        _login_with(api)

    server = await probes.serve(cfg.metrics_port) if cfg.metrics_port else None
    try:
        # Our identity, not kopf's guess: it asks the passwd database for the user, and the
        # image's uid 65532 has no entry there (found when the chart's pods first ran).
        # (kopf's Identity is a NewType of str that kopf does not export.)
        identity: Any = cfg.identity
        await kopf.operator(
            clusterwide=True, standalone=True, identity=identity, memo=kopf.Memo(runtime=rt)
        )
    finally:
        if server is not None:
            await server.cleanup()
