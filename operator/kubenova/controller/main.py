"""Run the controller: kopf's watches and webhook, kubenova's runtime, leader election.

Every replica watches (warm store, validating webhook); only the Lease holder reconciles.
"""

from __future__ import annotations

import asyncio
import logging
import os

import kopf

from kubenova import settings as settings_mod
from kubenova.controller import app, runtime
from kubenova.kube import client, lease

log = logging.getLogger(__name__)


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

    async def lead() -> None:
        if elector is not None:
            await elector.acquire()
        await rt.prime()
        rt.start()
        if elector is not None:
            await elector.hold()
            log.critical("leader election lost: exiting so that one controller acts at a time")
            logging.shutdown()
            os._exit(1)

    @kopf.on.startup()
    async def on_startup_controller(settings: kopf.OperatorSettings, **_: object) -> None:
        app.configure(settings, cfg)
        rt.tasks.append(asyncio.create_task(lead()))

    @kopf.on.cleanup()
    async def on_cleanup_controller(**_: object) -> None:
        if elector is not None:
            await elector.release()
        await rt.stop()

    if cfg.kubeconfig:

        @kopf.on.login()
        def on_login_kubeconfig(**_: object) -> kopf.ConnectionInfo:
            # kopf's own kubeconfig login reads only $KUBECONFIG; `--kubeconfig` must win,
            # so kopf gets the connection kubenova's client already loaded.
            c = api.configuration
            token = c.api_key.get("authorization", "").removeprefix("Bearer ").strip()
            return kopf.ConnectionInfo(
                server=str(c.host),
                ca_path=c.ssl_ca_cert,
                certificate_path=c.cert_file,
                private_key_path=c.key_file,
                token=token or None,
                insecure=not c.verify_ssl,
            )

    await kopf.operator(clusterwide=True, standalone=True, memo=kopf.Memo(runtime=rt))
