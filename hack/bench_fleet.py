"""Fleet benchmark: the real controller and simulated nodes on the local control plane.

One agent process simulates N hypervisors (fake driver, `kubenova agent --node-count`;
each node keeps its own label-selected watches), the controller runs as a separate
process, and this script plays the users: it creates M instances, resizes K of them
(concurrently or one at a time), then confirms them, watching every Instance to time
spec edit -> VERIFY_RESIZE and confirm -> ACTIVE. It records the API server's request
counters (`apiserver_request_total`, scraped before and after), the controller's CPU
seconds and peak RSS, the agent's peak RSS and watch events per node, and ends with an
invariant check: no hypervisor overcommitted, reported usage equal to the sum of claims.

    python -m hack.bench_fleet --scenario single        # (a) one resize at a time
    python -m hack.bench_fleet --scenario concurrent    # (b) 1,000 resizes over 200 nodes
    python -m hack.bench_fleet --scenario footprint     # (c) 10,000 instances, 1,000 nodes
    ... [--hypervisors N --instances M --resizes K] [--profile]

Heartbeats are slowed down (one per node per 10 minutes) so that the request counters
of the measured window hold the resizes' requests, not the fleet's heartbeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from hack import controlplane, fleet_watch
from kubenova.kube import client, objects

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
SCENARIOS = {  # hypervisors, instances, resizes, concurrent
    "single": (20, 30, 30, False),
    "concurrent": (200, 1000, 1000, True),
    "footprint": (1000, 10000, 0, True),
}
CREATE_CONCURRENCY = 50  # the users' pace: enough to keep the controller busy
CAPACITY = "vcpus=32,memoryMiB=131072,diskGiB=2000"
HEARTBEAT_SECONDS = 600  # out of the measured window (see the module docstring)
# Writes of kubenova objects, core events and secrets; what other clients (the
# controller-manager, leases) write is reported apart.
KUBENOVA_RESOURCES = {"instances", "migrations", "hypervisors", "events", "secrets"}
WRITE_VERBS = {"POST", "PATCH", "PUT", "DELETE"}
USER_WRITES_PER_RESIZE = 2  # the spec edit and the confirm annotation: the user's, not ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_fleet")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="single")
    parser.add_argument("--hypervisors", type=int)
    parser.add_argument("--instances", type=int)
    parser.add_argument("--resizes", type=int)
    parser.add_argument("--profile", action="store_true", help="run the controller under py-spy")
    parser.add_argument(
        "--controller-source",
        type=pathlib.Path,
        help="run the controller from this source root (an older `operator/`): before/after",
    )
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    n, m, k, concurrent = SCENARIOS[args.scenario]
    n, m = args.hypervisors or n, args.instances or m
    k = k if args.resizes is None else args.resizes
    out = args.out or RESULTS / f"fleet-{args.scenario}.json"
    with tempfile.TemporaryDirectory(prefix="kubenova-fleet-") as tmp:
        result = asyncio.run(
            Bench(pathlib.Path(tmp), profile=args.profile, source=args.controller_source).run(
                hypervisors=n, instances=m, resizes=min(k, m), concurrent=concurrent
            )
        )
    result["scenario"] = args.scenario
    result["controller_source"] = str(args.controller_source or "this tree")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "requests"}, indent=2))
    print(f"written to {out}")
    return 0 if result["invariants"]["ok"] else 1


class Bench:
    def __init__(
        self, directory: pathlib.Path, *, profile: bool, source: pathlib.Path | None
    ) -> None:
        self.dir = directory
        self.profile = profile
        self.source = source
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.plane = controlplane.ControlPlane(directory / "controlplane")
        # hack/bench_heartbeats.py: real heartbeat periods, both processes from `source`.
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self.agent_source: pathlib.Path | None = None
        self.controller_args: list[str] = []

    async def run(
        self, *, hypervisors: int, instances: int, resizes: int, concurrent: bool
    ) -> dict[str, Any]:
        self.plane.start()
        try:
            self._install()
            self._spawn_agent(hypervisors)
            self._spawn_controller()
            api = await client.connect(str(self.plane.kubeconfig), qps_connections=128)
            try:
                return await self._measure(api, hypervisors, instances, resizes, concurrent)
            finally:
                await api.close()
        finally:
            for name, proc in self.procs.items():
                # py-spy writes its profile when interrupted, not when terminated.
                proc.send_signal(
                    signal.SIGINT if self.profile and name == "controller" else signal.SIGTERM
                )
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.plane.stop()

    # --- processes ---------------------------------------------------------------------------

    def _kubectl(self, *args: str) -> str:
        argv = ["kubectl", f"--kubeconfig={self.plane.kubeconfig}", *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def _install(self) -> None:
        crds = [a for p in sorted((REPO / "crds").glob("*.yaml")) for a in ("-f", str(p))]
        self._kubectl("apply", *crds)
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
        self._kubectl("apply", "-f", str(REPO / "crds" / "samples" / "flavors.yaml"))

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig), **(env or {})}
        with (self.dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[name] = proc
        return proc

    def _spawn_agent(self, hypervisors: int) -> None:
        self._spawn(
            "agent",
            [
                *(sys.executable, "-m", "kubenova.cli", "agent", "--driver=fake"),
                *("--node=bench-", f"--node-count={hypervisors}", f"--capacity={CAPACITY}"),
                f"--heartbeat-interval-seconds={self.heartbeat_seconds}",
                f"--stats-file={self.dir / 'agent-stats.json'}",
            ],
            {"PYTHONPATH": str(self.agent_source.resolve())} if self.agent_source else None,
        )

    def _spawn_controller(self) -> None:
        argv = [
            *(sys.executable, "-m", "kubenova.cli", "controller"),
            f"--service-down-time-seconds={self.heartbeat_seconds * 3}",
            f"--webhook-port={controlplane.free_port()}",
            f"--webhook-cert-dir={self.dir / 'webhook'}",
            *self.controller_args,
        ]
        if self.profile:
            svg = RESULTS / "fleet-profile.txt"  # collapsed stacks: hack/profile_top.py
            RESULTS.mkdir(exist_ok=True)
            spy = str(pathlib.Path(sys.executable).parent / "py-spy")
            argv = [spy, "record", "--format", "raw", "-o", str(svg), "--", *argv]
        # PYTHONPATH comes before the editable install: that tree's kubenova runs.
        source = {"PYTHONPATH": str(self.source.resolve())} if self.source else {}
        self._spawn("controller", argv, source)

    def controller_pid(self) -> int:
        pid = self.procs["controller"].pid
        if self.profile:  # py-spy's child
            children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return int(children[0]) if children else pid
        return pid

    # --- measurement -------------------------------------------------------------------------

    async def _measure(
        self, api: Any, hypervisors: int, instances: int, resizes: int, concurrent: bool
    ) -> dict[str, Any]:
        objs = objects.Objects(api)
        began = time.monotonic()
        await fleet_watch.until(
            lambda: _count_up(objs, hypervisors), timeout=120 + hypervisors / 10
        )
        registered = time.monotonic() - began
        watcher = fleet_watch.InstanceWatcher(objs)
        watch_task = asyncio.create_task(watcher.run())
        await watcher.synced.wait()
        names = [f"vm-{i:05d}" for i in range(instances)]
        began = time.monotonic()
        await fleet_watch.gather_limited(
            (_create(objs, name) for name in names), CREATE_CONCURRENCY
        )
        missing = await watcher.wait_all(names, "ACTIVE", after=0.0, timeout=60 + instances / 2)
        if missing:
            raise TimeoutError(f"{len(missing)} instances not ACTIVE, e.g. {missing[:3]}")
        created = time.monotonic() - began
        result: dict[str, Any] = {
            "hypervisors": hypervisors,
            "instances": instances,
            "resizes": resizes,
            "concurrent": concurrent,
            "register_seconds": round(registered, 1),
            "create_seconds": round(created, 1),
        }
        pid = self.controller_pid()
        agent = self.procs["agent"].pid
        before = (self._requests(), _cpu_seconds(pid), _cpu_seconds(agent))
        targets = names[:resizes]
        if resizes:
            result["resize_to_verify_ms"] = await _timed(
                watcher, targets, concurrent, _resize_target(objs), "VERIFY_RESIZE"
            )
            result["confirm_to_active_ms"] = await _timed(
                watcher, targets, concurrent, _confirm_target(objs), "ACTIVE"
            )
        after = (self._requests(), _cpu_seconds(pid), _cpu_seconds(agent))
        watch_task.cancel()
        result["controller_cpu_seconds"] = round(after[1] - before[1], 2)
        result["agent_cpu_seconds"] = round(after[2] - before[2], 2)
        result["controller_peak_rss_mib"] = _peak_rss_mib(pid)
        result["agent_peak_rss_mib"] = _peak_rss_mib(self.procs["agent"].pid)
        result.update(_per_resize(before[0], after[0], resizes))
        result["events_per_agent"] = self._agent_events()
        result["invariants"] = await _invariants(objs)
        return result

    def _requests(self) -> dict[str, float]:
        """Request counts by verb and resource[/subresource] ("PATCH instances/status"),
        plus the summed seconds the API server spent on them ("seconds PATCH ...") and
        in the validating webhook ("webhook seconds"/"webhook calls")."""
        totals: dict[str, float] = {}
        pattern = re.compile(r"^(apiserver_\w+?)(_sum|_count)?\{(.*)\} (\S+)$")
        for line in self._kubectl("get", "--raw", "/metrics").splitlines():
            match = pattern.match(line)
            if not match:
                continue
            metric, suffix, raw, value = match.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', raw))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            if metric == "apiserver_request_total" and not suffix:
                key = f"{labels.get('verb')} {resource}"
            elif metric == "apiserver_request_duration_seconds" and suffix == "_sum":
                key = f"seconds {labels.get('verb')} {resource}"
            elif metric == "apiserver_admission_webhook_admission_duration_seconds" and suffix:
                key = "webhook seconds" if suffix == "_sum" else "webhook calls"
            else:
                continue
            totals[key] = totals.get(key, 0.0) + float(value)
        return totals

    def _agent_events(self) -> dict[str, float]:
        path = self.dir / "agent-stats.json"
        deadline = time.monotonic() + 5  # the agent writes it every 2 s
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        events = list(json.loads(path.read_text())["events"].values()) if path.exists() else [0]
        return {
            "mean": round(statistics.mean(events), 1),
            "max": max(events),
            "total": sum(events),
        }


async def _count_up(objs: objects.Objects, wanted: int) -> bool:
    items, _ = await objs.list(objects.HYPERVISOR)
    return sum(1 for hv in items if hv.get("status", {}).get("agent")) >= wanted


async def _create(objs: objects.Objects, name: str) -> None:
    body = {
        "apiVersion": objects.INSTANCE.api_version,
        "kind": "Instance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    await objs.create(objects.INSTANCE, "default", body)


def _resize_target(objs: objects.Objects) -> fleet_watch.Action:
    async def act(name: str) -> None:
        await objs.patch(objects.INSTANCE, "default", name, {"spec": {"flavor": "m1.small"}})

    return act


def _confirm_target(objs: objects.Objects) -> fleet_watch.Action:
    async def act(name: str) -> None:
        patch = {"metadata": {"annotations": {"compute.kubenova.io/resize": "confirm"}}}
        await objs.patch(objects.INSTANCE, "default", name, patch)

    return act


async def _timed(
    watcher: fleet_watch.InstanceWatcher,
    names: list[str],
    concurrent: bool,
    act: fleet_watch.Action,
    phase: str,
) -> dict[str, float]:
    """Milliseconds from each action to the phase it leads to, as percentiles."""
    began = time.monotonic()
    sent: dict[str, float] = {}

    async def one(name: str) -> None:
        sent[name] = time.monotonic()
        await act(name)
        if not concurrent:
            await watcher.wait_all([name], phase, after=sent[name], timeout=60)

    if concurrent:
        await fleet_watch.gather_limited((one(n) for n in names), CREATE_CONCURRENCY)
        await watcher.wait_all(names, phase, after=began, timeout=120 + len(names) / 2)
    else:
        for name in names:
            await one(name)
    spans = sorted((watcher.reached(n, phase, sent[n]) - sent[n]) * 1000 for n in names)
    if spans[-1] == float("inf"):
        raise TimeoutError(f"{spans.count(float('inf'))} instances never reached {phase}")
    return {
        "p50": round(statistics.median(spans), 1),
        "p95": round(spans[min(len(spans) - 1, int(0.95 * len(spans)))], 1),
        "p99": round(spans[min(len(spans) - 1, int(0.99 * len(spans)))], 1),
        "max": round(spans[-1], 1),
        "all_done_s": round(time.monotonic() - began, 2),
    }


def _per_resize(before: dict[str, float], after: dict[str, float], resizes: int) -> dict[str, Any]:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: v for k, v in delta.items() if v}
    counts = {k: v for k, v in delta.items() if " " in k and k.split(" ")[0] != "seconds"}
    counts = {k: v for k, v in counts.items() if not k.startswith("webhook")}
    ours = {k: v for k, v in counts.items() if _resource(k) in KUBENOVA_RESOURCES}
    writes = {k: v for k, v in ours.items() if k.split(" ")[0] in WRITE_VERBS}
    latency = {
        k: round(1000 * delta.get(f"seconds {k}", 0) / n, 1) for k, n in sorted(writes.items())
    }
    per = max(resizes, 1)
    return {
        "requests": {"all": delta, "kubenova_writes": writes},
        "requests_per_resize": round(sum(ours.values()) / per, 1),
        "writes_per_resize": round(sum(writes.values()) / per - USER_WRITES_PER_RESIZE, 1)
        if resizes
        else 0,
        "writes_per_resize_by_kind": {k: round(v / per, 2) for k, v in sorted(writes.items())},
        "write_latency_mean_ms": latency,
        "webhook_mean_ms": round(
            1000 * delta.get("webhook seconds", 0) / max(delta.get("webhook calls", 0), 1), 1
        ),
    }


def _resource(key: str) -> str:
    return key.split(" ")[1].split("/", maxsplit=1)[0]


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _invariants(objs: objects.Objects) -> dict[str, Any]:
    """Usage reported on each Hypervisor equals the sum of the flavors placed on it, and
    stays within capacity x ratio. Polls briefly: the controller writes usage debounced."""
    deadline = time.monotonic() + 20
    while True:
        report = await _check(objs)
        if report["ok"] or time.monotonic() > deadline:
            return report
        await asyncio.sleep(1)


async def _check(objs: objects.Objects) -> dict[str, Any]:
    hvs, _ = await objs.list(objects.HYPERVISOR)
    insts, _ = await objs.list(objects.INSTANCE)
    migs, _ = await objs.list(objects.MIGRATION)
    final = ("confirmed", "reverted", "error")
    active = [m for m in migs if m.get("status", {}).get("phase") not in final]
    placed: dict[str, list[int]] = {}
    for inst in insts:
        status = inst.get("status", {})
        node, flavor = status.get("node"), status.get("flavor")
        if node and flavor:
            sums = placed.setdefault(node, [0, 0, 0, 0])
            for i, field in enumerate(("vcpus", "memoryMiB", "diskGiB")):
                sums[i] += int(flavor[field])
            sums[3] += 1
    mismatched, overcommitted = [], []
    for hv in hvs:
        name = hv["metadata"]["name"]
        usage = hv.get("status", {}).get("usage", {})
        got = [usage.get(f, 0) for f in ("vcpus", "memoryMiB", "diskGiB", "instances")]
        if got != placed.get(name, [0, 0, 0, 0]):
            mismatched.append(name)
        cap = hv.get("status", {}).get("agent", {}).get("capacity", {})
        ratios = hv.get("spec", {}).get("allocationRatios", {})
        limits = [
            int(cap.get("vcpus", 0) * ratios.get("cpu", 4.0)),
            int(cap.get("memoryMiB", 0) * ratios.get("memory", 1.0)),
            int(cap.get("diskGiB", 0) * ratios.get("disk", 1.0)),
        ]
        if any(u > lim for u, lim in zip(got[:3], limits, strict=True)):
            overcommitted.append(name)
    return {
        "ok": not (mismatched or overcommitted or active),
        "hypervisors": len(hvs),
        "usage_mismatched": mismatched[:10],
        "overcommitted": overcommitted[:10],
        "migrations_still_active": len(active),
    }


if __name__ == "__main__":
    sys.exit(main())
