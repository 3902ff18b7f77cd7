"""Chaos run: random user actions and random faults on a whole kubenova, the invariants
checked after each fault (tests/chaos/invariants.py).

    python -m hack.chaos --faults 200 --seed 1234        # make chaos FAULTS=200 SEED=1234

It starts everything it needs and stops it at the end: its own control plane, two
controllers (leader election, 3 s lease) and fake-driver agents, as the tests do
(tests/env.py). It creates a few Instances, then loops: one user action (resize, confirm,
revert, migrate, delete, create), one fault (below), a bounded wait for convergence, the
invariant checker; a background sampler checks the invariants during the faults too.
It prints the convergence times (p50, p99) and, last, `chaos: N faults, V violations,
seed S`; the figures go to bench-results/chaos-<seed>.json, with the processes' logs
beside it when a violation was found. Exit code 1 if V > 0.

A controller that exits (a leader that lost its lease does, on purpose) is restarted, as
its Deployment would; so is an agent after its SIGKILL. The whole run is reproducible from
its seed as far as the choices go; the timings are the machine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from tests import env as kubenova_env
from tests.chaos import invariants, moves

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"


@dataclasses.dataclass
class Outcome:
    """One fault: what the user did, what struck, how long convergence took, what broke."""

    fault: str
    action: str
    seconds: float  # from the fault's end (everything restarted) until converged
    violations: list[str]
    fault_seconds: float = 0.0  # the fault itself, with the takeover it waits for
    round_seconds: float = 0.0  # action, fault, convergence and checks


@dataclasses.dataclass
class Options:
    faults: int = 200
    seed: int = 0
    instances: int = 8
    nodes: int = 4
    convergence_timeout: float = 60.0
    results_dir: pathlib.Path = RESULTS


@dataclasses.dataclass
class Report:
    seed: int
    outcomes: list[Outcome]
    sampled: list[str]  # what the background sampler saw, each once
    wall_seconds: float
    restarts: int
    refused: int

    @property
    def violations(self) -> list[str]:
        return [v for o in self.outcomes for v in o.violations] + self.sampled

    def figures(self) -> dict[str, Any]:
        times = [o.seconds for o in self.outcomes]
        by_fault = {
            f: [o for o in self.outcomes if o.fault == f]
            for f in moves.FAULTS
            if any(o.fault == f for o in self.outcomes)
        }
        return {
            "seed": self.seed,
            "faults": len(self.outcomes),
            "violations": len(self.violations),
            "wall_seconds": round(self.wall_seconds, 1),
            "convergence_seconds": summary(times),
            "by_fault": {
                f: {
                    "convergence_seconds": summary([o.seconds for o in rounds]),
                    "fault_seconds": summary([o.fault_seconds for o in rounds]),
                    "round_seconds": summary([o.round_seconds for o in rounds]),
                }
                for f, rounds in by_fault.items()
            },
            "actions": {
                a: sum(o.action == a for o in self.outcomes)
                for a in sorted({o.action for o in self.outcomes})
            },
            "restarts": self.restarts,
            "refused_user_requests": self.refused,
            "sampled_violations": self.sampled,
            "fault_violations": [
                {"round": i + 1, "fault": o.fault, "action": o.action, "violations": o.violations}
                for i, o in enumerate(self.outcomes)
                if o.violations
            ],
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value at or above which a fraction q of values lie."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 0.50), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
        "count": len(values),
    }


def one_round(cluster: moves.Cluster, opts: Options) -> Outcome:
    began = time.monotonic()
    cluster.revive()
    action = cluster.act()
    fault = cluster.rng.choice(moves.FAULTS)
    found = len(cluster.found)
    struck = time.monotonic()
    cluster.strike(fault)
    cluster.revive()
    fault_seconds = time.monotonic() - struck
    converged = invariants.wait_converged(
        cluster.env, opts.convergence_timeout, tick=cluster.revive, ignore=cluster.given_up
    )
    cluster.give_up(converged.stuck)
    try:
        checked = invariants.check(cluster.env, settled=True, snap=converged.last)
    except AssertionError as exc:
        checked = [f"invariants unreadable: {str(exc).splitlines()[0]}"]
    violations = [*converged.violations, *checked, *cluster.found[found:]]
    return Outcome(
        fault, action, converged.seconds, violations, fault_seconds, time.monotonic() - began
    )


def run(opts: Options) -> Report:
    """The whole run on a kubenova of its own, stopped and removed at the end (its logs
    kept under results_dir when a violation was found, or the run broke off)."""
    began = time.monotonic()
    directory = pathlib.Path(tempfile.mkdtemp(prefix="kubenova-chaos-"))
    report: Report | None = None
    try:
        env = kubenova_env.Env(directory)
        try:
            report = rounds(env, opts, began)
        finally:
            env.close()
    finally:
        if report is None or report.violations:
            keep_logs(directory, opts.results_dir / f"chaos-{opts.seed}-logs")
        shutil.rmtree(directory, ignore_errors=True)
    return report


def rounds(env: kubenova_env.Env, opts: Options, began: float) -> Report:
    cluster = moves.Cluster(env, random.Random(opts.seed), opts.instances)
    cluster.start(opts.nodes, opts.convergence_timeout)
    outcomes: list[Outcome] = []
    with invariants.sampling(env, interval=2.0) as seen:
        for i in range(opts.faults):
            outcome = one_round(cluster, opts)
            outcomes.append(outcome)
            broke = f"  VIOLATIONS: {outcome.violations}" if outcome.violations else ""
            print(
                f"chaos: [{i + 1}/{opts.faults}] {outcome.action:<8} {outcome.fault:<21}"
                f" fault {outcome.fault_seconds:4.1f}s, converged in {outcome.seconds:4.1f}s,"
                f" round {outcome.round_seconds:4.1f}s{broke}",
                flush=True,
            )
    return Report(
        opts.seed, outcomes, seen.report(), time.monotonic() - began,
        cluster.restarts, cluster.refused,
    )  # fmt: skip


def keep_logs(directory: pathlib.Path, into: pathlib.Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for log in [*directory.glob("*.log"), *directory.glob("controlplane/logs/*.log")]:
        shutil.copy(log, into / log.name)
    print(f"chaos: logs kept in {into}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--faults", type=int, default=200)
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"chaos: seed {seed}", flush=True)
    opts = Options(args.faults, seed, args.instances, args.nodes, results_dir=args.results_dir)
    report = run(opts)
    figures = report.figures()
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    path = opts.results_dir / f"chaos-{seed}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    conv = figures["convergence_seconds"]
    print(
        f"chaos: convergence p50 {conv['p50']:.1f}s p99 {conv['p99']:.1f}s max {conv['max']:.1f}s;"
        f" {report.restarts} restarts, {report.refused} user requests refused;"
        f" {report.wall_seconds:.0f}s; figures in {path}"
    )
    print(f"chaos: {len(report.outcomes)} faults, {len(report.violations)} violations, seed {seed}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
