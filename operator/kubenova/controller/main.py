"""Run the controller: kopf's operator loop with kubenova's runtime in its memo."""

from __future__ import annotations

import kopf

from kubenova import settings as settings_mod
from kubenova.controller import app, runtime
from kubenova.kube import client


async def run(cfg: settings_mod.Controller) -> None:
    api = await client.connect(cfg.kubeconfig)
    rt = runtime.Runtime(api, cfg)
    if cfg.webhook_port:
        app.register_webhook()

    @kopf.on.startup()
    async def on_startup_controller(settings: kopf.OperatorSettings, **_: object) -> None:
        app.configure(settings, cfg)
        await rt.prime()
        rt.start()

    @kopf.on.cleanup()
    async def on_cleanup_controller(**_: object) -> None:
        await rt.stop()

    if cfg.kubeconfig:

        @kopf.on.login()
        def on_login_kubeconfig(**_: object) -> kopf.ConnectionInfo | None:
            return kopf.login_with_kubeconfig(**_)  # type: ignore[arg-type]

    await kopf.operator(
        clusterwide=True,
        standalone=not cfg.peering,
        peering_name=cfg.peering or None,
        memo=kopf.Memo(runtime=rt),
    )
