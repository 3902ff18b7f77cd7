"""Benchmark: one placement decision at 1,000 / 5,000 / 50,000 hypervisors.

Hosts get random capacities and usage (seeded, so runs compare); each size runs the
same requests through the linear reference (`scheduler.select`) and the host index the
controller uses (`index.HostIndex.select`, built once, as the controller keeps it), and
reports the median, p95 and p99 of one decision for each, side by side (the index's
figure includes re-sorting the chosen host after its claim). Every decision of the two
is checked to be the same host.

    python -m hack.bench_scheduler [--decisions 200] [--out bench-results/scheduler.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import sys
import time

from kubenova.scheduling import index, scheduler
from kubenova.scheduling.amounts import Amount

REPO = pathlib.Path(__file__).resolve().parent.parent
SIZES = (1_000, 5_000, 50_000)
FLAVORS = (Amount(1, 512, 1), Amount(1, 2048, 20), Amount(2, 4096, 40), Amount(4, 8192, 80))


def fleet(n: int, rng: random.Random) -> tuple[list[scheduler.Host], dict[str, Amount]]:
    hosts, used = [], {}
    for i in range(n):
        cap = Amount(rng.choice((16, 32, 64)), rng.choice((65536, 131072, 262144)), 2000)
        name = f"node-{i:05d}"
        hosts.append(scheduler.Host(name=name, capacity=cap, up=rng.random() > 0.01))
        used[name] = Amount(
            rng.randrange(cap.vcpus * 4), rng.randrange(cap.memory_mib), rng.randrange(cap.disk_gib)
        )
    return hosts, used


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_scheduler")
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "bench-results" / "scheduler.json"
    )
    args = parser.parse_args(argv)
    rng = random.Random(1790204)  # seeded: every run measures the same fleets
    results: dict[int, dict[str, dict[str, float]]] = {}
    for n in SIZES:
        hosts, used = fleet(n, rng)
        idx = index.HostIndex()
        for host in hosts:
            idx.put(host)
        for name, amount in used.items():
            idx.set_used(name, amount)
        timings: dict[str, list[float]] = {k: [] for k in ("linear", "index", "index-cpu")}
        for i in range(args.decisions):
            request = scheduler.Request(FLAVORS[i % len(FLAVORS)])
            began = time.perf_counter()
            expected = scheduler.select(hosts, used, request)
            timings["linear"].append((time.perf_counter() - began) * 1000)
            began, cpu = time.perf_counter(), time.process_time()
            got = idx.select(request)
            if got.node is not None:  # the claim moves the host in the order: part of the cost
                idx.set_used(got.node, used[got.node] + request.flavor)
            timings["index"].append((time.perf_counter() - began) * 1000)
            # CPU time too: on a shared machine the wall clock's p99 is mostly preemption.
            timings["index-cpu"].append((time.process_time() - cpu) * 1000)
            if got.node != expected.node:
                raise SystemExit(f"index chose {got.node}, linear {expected.node} ({request})")
            if got.node is not None:
                used[got.node] = used[got.node] + request.flavor
        results[n] = {name: summary(t) for name, t in timings.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "scheduler-select", "results": results}, indent=2))
    print(f"one placement decision, {args.decisions} decisions per size ({args.out}):")
    print(f"{'hypervisors':>12} {'':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for n, by_kind in results.items():
        for kind, r in by_kind.items():
            print(f"{n:>12} {kind:>9} {r['p50_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['p99_ms']:>8.3f}")
    return 0


def summary(timings: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(timings),
        "p95_ms": percentile(timings, 0.95),
        "p99_ms": percentile(timings, 0.99),
    }


if __name__ == "__main__":
    sys.exit(main())
