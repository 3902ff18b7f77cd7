"""Heartbeat benchmark: what 1,000 idle nodes cost the API server and the controller.

The real controller and one agent process simulating N hypervisors (fake driver) on the
local control plane, heartbeats at their real period (10 s), plus W instances waiting for
a host (a flavor no node fits: NoValidHost). Nothing else happens; over a window of
`--seconds` it counts what the API server served (Hypervisor status writes, Lease writes)
and how often the controller retried the waiting instances (its scheduling failures
counter: every retry of a waiting instance is one), per heartbeat sent.

    python -m hack.bench_heartbeats [--hypervisors 1000 --waiting 50 --seconds 60]
    python -m hack.bench_heartbeats --source /tmp/old/operator   # an older tree: before/after

Both processes run from `--source` when given (heartbeats changed on both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import aiohttp

from hack import bench_fleet, controlplane, fleet_watch
from kubenova.kube import client, objects
from kubenova.observability import metrics

HEARTBEAT_SECONDS = 10  # the agent's default (the kubelet's node Lease period)
HUGE = {"vcpus": 1024, "memoryMiB": 1048576, "diskGiB": 65536}  # fits no hypervisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_heartbeats")
    parser.add_argument("--hypervisors", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--source", type=pathlib.Path, help="run both processes from this tree")
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--keep", type=pathlib.Path, help="keep logs and state in this directory")
    args = parser.parse_args(argv)
    out = args.out or bench_fleet.RESULTS / "heartbeats.json"
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubenova-heartbeats-") as tmp:
        result = asyncio.run(
            run(
                args.keep or pathlib.Path(tmp),
                hypervisors=args.hypervisors,
                waiting=args.waiting,
                seconds=args.seconds,
                source=args.source,
            )
        )
    result["source"] = str(args.source or "this tree")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "requests"}, indent=2))
    print(f"written to {out}")
    return 0


async def run(
    directory: pathlib.Path,
    *,
    hypervisors: int,
    waiting: int,
    seconds: float,
    source: pathlib.Path | None,
) -> dict[str, Any]:
    bench = bench_fleet.Bench(directory, profile=False, source=source)
    bench.heartbeat_seconds = HEARTBEAT_SECONDS
    bench.agent_source = source
    port = controlplane.free_port()
    bench.controller_args = [f"--metrics-port={port}"]
    bench.plane.start()
    try:
        bench._install()
        _apply_flavor(bench)
        bench._spawn_agent(hypervisors)
        bench._spawn_controller()
        api = await client.connect(str(bench.plane.kubeconfig), qps_connections=64)
        try:
            return await _measure(
                bench, api, hypervisors=hypervisors, waiting=waiting, seconds=seconds, port=port
            )
        finally:
            await api.close()
    finally:
        for proc in bench.procs.values():
            proc.terminate()
        for proc in bench.procs.values():
            proc.wait(timeout=30)
        bench.plane.stop()


def _apply_flavor(bench: bench_fleet.Bench) -> None:
    flavor = {
        "apiVersion": objects.FLAVOR.api_version,
        "kind": "Flavor",
        "metadata": {"name": "huge"},
        "spec": HUGE,
    }
    path = bench.dir / "huge.json"
    path.write_text(json.dumps(flavor))
    bench._kubectl("apply", "-f", str(path))


async def _measure(
    bench: bench_fleet.Bench, api: Any, *, hypervisors: int, waiting: int, seconds: float, port: int
) -> dict[str, Any]:
    objs = objects.Objects(api)
    await fleet_watch.until(
        lambda: bench_fleet._count_up(objs, hypervisors), timeout=120 + hypervisors / 10
    )
    # Every simulated node's first lists done (5 per node): before that the one agent
    # process is busy listing, not the steady state this measures.
    await fleet_watch.until(lambda: _synced(bench, hypervisors), timeout=600 + hypervisors)
    for i in range(waiting):
        body = {
            "apiVersion": objects.INSTANCE.api_version,
            "kind": "Instance",
            "metadata": {"name": f"waits-{i:03d}", "namespace": "default"},
            "spec": {"flavor": "huge", "image": "cirros"},
        }
        await objs.create(objects.INSTANCE, "default", body)
    await fleet_watch.until(lambda: _all_waiting(objs, waiting), timeout=120)
    await asyncio.sleep(2 * HEARTBEAT_SECONDS)  # settle: first reports and retries done
    pid = bench.controller_pid()
    before = (bench._requests(), await _retries(port), bench_fleet._cpu_seconds(pid))
    began = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - began
    after = (bench._requests(), await _retries(port), bench_fleet._cpu_seconds(pid))
    delta = {k: after[0].get(k, 0) - before[0].get(k, 0) for k in after[0]}
    per_minute = 60.0 / elapsed
    heartbeats = hypervisors * elapsed / HEARTBEAT_SECONDS
    retries = after[1] - before[1]
    return {
        "hypervisors": hypervisors,
        "waiting_instances": waiting,
        "window_seconds": round(elapsed, 1),
        "heartbeats_sent": round(heartbeats),
        "hypervisor_status_writes_per_min": round(
            delta.get("PATCH hypervisors/status", 0) * per_minute
        ),
        "lease_writes_per_min": round(
            (delta.get("PUT leases", 0) + delta.get("POST leases", 0)) * per_minute
        ),
        "waiting_retries": round(retries),
        "retries_per_heartbeat": round(retries / max(heartbeats, 1), 3),
        "controller_cpu_seconds_per_min": round((after[2] - before[2]) * per_minute, 2),
        "requests": {k: v for k, v in delta.items() if v and not k.startswith("seconds")},
    }


async def _synced(bench: bench_fleet.Bench, nodes: int) -> bool:
    log = (bench.dir / "agent.log").read_text(errors="replace")
    return log.count("caches synced") >= nodes


async def _all_waiting(objs: objects.Objects, wanted: int) -> bool:
    items, _ = await objs.list(objects.INSTANCE)
    return sum(1 for i in items if _no_host(i)) >= wanted


def _no_host(inst: dict[str, Any]) -> bool:
    return any(
        c.get("reason") == "NoValidHost" for c in inst.get("status", {}).get("conditions", [])
    )


async def _retries(port: int) -> float:
    """The controller's NoValidHost decisions so far (one per retry of a waiting instance)."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        text = await answer.text()
    return sum(
        value
        for name, labels, value in metrics.samples(text)
        if name == "kubenova_scheduling_failures_total" and labels.get("reason") == "NoValidHost"
    )


if __name__ == "__main__":
    sys.exit(main())
