"""Benchmark: how fast the local control plane starts from the binary cache, and its memory.

Starts it N times in a row (sequentially, as `make up` and each pytest worker do), and
reports the median and spread of: API server ready (/readyz), kubenova CRDs Established,
and the resident memory of etcd and kube-apiserver once idle.

    python -m hack.bench_controlplane [--runs 5] [--out bench-results/controlplane.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from hack import controlplane

REPO = controlplane.REPO


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(bin_dir: pathlib.Path) -> dict[str, float]:
    crds = [a for p in sorted((REPO / "crds").glob("*.yaml")) for a in ("-f", str(p))]
    with tempfile.TemporaryDirectory(prefix="kubenova-bench-") as tmp:
        began = time.monotonic()
        plane = controlplane.ControlPlane(pathlib.Path(tmp), bin_dir=bin_dir).start()
        try:
            ready = time.monotonic() - began
            kubectl = ["kubectl", f"--kubeconfig={plane.kubeconfig}"]
            subprocess.run([*kubectl, "apply", *crds], check=True, capture_output=True)
            subprocess.run(
                [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", *crds],
                check=True,
                capture_output=True,
            )
            established = time.monotonic() - began
            return {
                "ready_s": ready,
                "crds_established_s": established,
                "etcd_rss_mib": rss_mib(plane.processes["etcd"].pid),
                "apiserver_rss_mib": rss_mib(plane.processes["kube-apiserver"].pid),
            }
        finally:
            plane.stop()


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "median": statistics.median(r[key] for r in runs),
            "min": min(r[key] for r in runs),
            "max": max(r[key] for r in runs),
        }
        for key in runs[0]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_controlplane")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "bench-results" / "controlplane.json"
    )
    args = parser.parse_args(argv)
    bin_dir = controlplane.binaries()
    build_seconds = bin_dir.parent / "build-seconds"
    runs = [one_run(bin_dir) for _ in range(args.runs)]
    summary = summarise(runs)
    result = {
        "benchmark": "controlplane-start",
        "bin_dir": str(bin_dir),
        "cold_build_seconds": float(build_seconds.read_text()) if build_seconds.exists() else None,
        "runs": runs,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"control plane start from cache, {args.runs} runs ({args.out}):")
    print(f"{'metric':<22} {'median':>8} {'min':>8} {'max':>8}")
    for key, s in summary.items():
        print(f"{key:<22} {s['median']:>8.2f} {s['min']:>8.2f} {s['max']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
