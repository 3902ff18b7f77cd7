"""Run the controller: kopf's watches and webhook, kubenova's runtime, leader election.

Every replica watches (warm store, validating webhook); only the Lease holder reconciles.
Every replica primes its store before contesting the lease, so a standby is ready (it
answers the webhook from a full view) and a rolling update does not wait on the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os

import kopf
import prometheus_client

from kubenova import settings as settings_mod
from kubenova.controller import app, runtime, telemetry
from kubenova.kube import client, lease
from kubenova.observability import probes

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("webhook configuration not registered", exc_info=task.exception())


async def run(cfg: settings_mod.Controller) -> None:
    api = await client.connect(cfg.kubeconfig)
    rt = runtime.Runtime(api, cfg)
    elector = (
        lease.LeaderElector(
            api,
            namespace=cfg.lease_namespace,
            name=cfg.lease_name,
            identity=cfg.identity,
            duration=cfg.lease_duration_seconds,
            renew_every=cfg.lease_duration_seconds / 3,
        )
        if cfg.leader_election
        else None
    )
    if cfg.webhook_port:
        app.register_webhook()
    managed_webhook = bool(cfg.webhook_port and cfg.webhook_managed)
    registering: set[asyncio.Task[None]] = set()  # a reference, so the task is not collected
    primed = asyncio.Event()
    probes.HEALTH.ready_when("store primed", primed.is_set)
    prometheus_client.REGISTRY.register(telemetry.StoreCollector(rt.store))

    async def lead() -> None:
        if elector is not None:
            await rt.prime()
            primed.set()
            await elector.acquire()
        await rt.prime()
        primed.set()
        rt.start()
        for task in rt.tasks:
            if task is not asyncio.current_task():  # named by what runs: "WorkQueue.run"
                name = getattr(task.get_coro(), "__qualname__", task.get_name())
                probes.HEALTH.watch(name, task)
        if elector is not None:
            await elector.hold()
            log.critical("leader election lost: exiting so that one controller acts at a time")
            logging.shutdown()
            os._exit(1)

    @kopf.on.startup()
    async def on_startup_controller(settings: kopf.OperatorSettings, **_: object) -> None:
        app.configure(settings, cfg)
        rt.tasks.append(asyncio.create_task(lead()))
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

        @kopf.on.login()
        def on_login_kubeconfig(**_: object) -> kopf.ConnectionInfo:
            # kopf's own kubeconfig login reads only $KUBECONFIG; `--kubeconfig` must win,
            # so kopf gets the connection kubenova's client already loaded.
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

    server = await probes.serve(cfg.metrics_port) if cfg.metrics_port else None
    try:
        await kopf.operator(clusterwide=True, standalone=True, memo=kopf.Memo(runtime=rt))
    finally:
        if server is not None:
            await server.cleanup()
