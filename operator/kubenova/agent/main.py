"""Run a node agent with its driver."""

from __future__ import annotations

import pathlib

from kubenova import settings as settings_mod
from kubenova.agent import node
from kubenova.drivers import base, fake
from kubenova.kube import client
from kubenova.observability import driver as timed_driver
from kubenova.observability import probes


def make_driver(cfg: settings_mod.Agent) -> base.Driver:
    if cfg.driver == "fake":
        return fake.FakeDriver(
            cfg.capacity,
            latency=cfg.fake_latency_seconds,
            state_file=pathlib.Path(cfg.fake_state_file) if cfg.fake_state_file else None,
            fail=frozenset(filter(None, cfg.fake_fail.split(","))),
        )
    if cfg.driver == "libvirt":
        from kubenova.drivers import libvirt  # noqa: PLC0415 - libvirt-python is optional

        return libvirt.LibvirtDriver(
            uri=cfg.libvirt_uri,
            instances_path=pathlib.Path(cfg.instances_path),
            images_path=pathlib.Path(cfg.images_path),
            virt_type=cfg.virt_type,
            domain_prefix=cfg.libvirt_domain_prefix,
        )
    raise ValueError(f"unknown driver {cfg.driver!r}: use fake or libvirt")


async def run(cfg: settings_mod.Agent) -> None:
    api = await client.connect(cfg.kubeconfig)
    agent = node.Node(api, cfg, timed_driver.Timed(make_driver(cfg)))
    probes.HEALTH.ready_when(
        "informers synced",
        lambda: all(inf.synced.is_set() for inf in (*agent.instances, *agent.migrations)),
    )
    server = await probes.serve(cfg.metrics_port) if cfg.metrics_port else None
    try:
        await agent.run()
    finally:
        if server is not None:
            await server.cleanup()
        await api.close()
