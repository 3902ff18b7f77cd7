"""Run a node agent with its driver, or (scale benchmarks) many simulated nodes at once.

With `node_count`, one process runs one `node.Node` per simulated node in one event loop:
each keeps its own fake hypervisor and its own label-selected watches, so the API server
still sends each node only its own objects, as it would to separate agents.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import resource

from kubernetes_asyncio import client as kube_client

from kubenova import settings as settings_mod
from kubenova.agent import node
from kubenova.drivers import base, fake, kubevirt
from kubenova.kube import client
from kubenova.observability import driver as timed_driver
from kubenova.observability import probes


def make_driver(cfg: settings_mod.Agent, api: kube_client.ApiClient) -> base.Driver:
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
            hotplug_ratio=cfg.hotplug_ratio,
            domain_prefix=cfg.libvirt_domain_prefix,
        )
    if cfg.driver == "kubevirt":
        # The agent's pod mounts the node's instancesPath at the same path, which is what
        # the VirtualMachines' hostDisks name.
        return kubevirt.KubeVirtDriver(
            api,
            node=cfg.node,
            instances_path=pathlib.Path(cfg.instances_path),
            images_path=pathlib.Path(cfg.images_path),
            grace_seconds=cfg.shutdown_timeout_seconds,
        )
    raise ValueError(f"unknown driver {cfg.driver!r}: use fake, libvirt or kubevirt")


STATS_EVERY_SECONDS = 2.0
WATCHES_PER_NODE = 5  # node, source-node, dest-node Instances; source, dest Migrations
SPARE_CONNECTIONS = 64  # requests beside the long-lived watches


def node_names(cfg: settings_mod.Agent) -> list[str]:
    if not cfg.node_count:
        return [cfg.node]
    return [f"{cfg.node}{i:04d}" for i in range(cfg.node_count)]


async def run(cfg: settings_mod.Agent) -> None:
    names = node_names(cfg)
    api = await client.connect(
        cfg.kubeconfig, qps_connections=WATCHES_PER_NODE * len(names) + SPARE_CONNECTIONS
    )
    nodes = []
    for name in names:
        ncfg = dataclasses.replace(cfg, node=name)
        nodes.append(node.Node(api, ncfg, timed_driver.Timed(make_driver(ncfg, api))))
    probes.HEALTH.ready_when(
        "informers synced",
        lambda: all(inf.synced.is_set() for n in nodes for inf in (*n.instances, *n.migrations)),
    )
    server = await probes.serve(cfg.metrics_port) if cfg.metrics_port else None
    tasks = [asyncio.ensure_future(n.run()) for n in nodes]
    if cfg.stats_file:
        tasks.append(asyncio.ensure_future(_write_stats(pathlib.Path(cfg.stats_file), nodes)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if server is not None:
            await server.cleanup()
        await api.close()


async def _write_stats(path: pathlib.Path, nodes: list[node.Node]) -> None:
    """Watch events received per node (bookmarks excluded) and this process's peak RSS."""
    while True:
        await asyncio.sleep(STATS_EVERY_SECONDS)
        stats = {
            "peakRssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "events": {n.name: n.events_received for n in nodes},
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(path)  # readers never see half a file
