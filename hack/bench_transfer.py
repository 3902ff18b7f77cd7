"""Benchmark: the cross-node disk hand-off against `rsync --sparse`, same files, same run.

Both sides run as separate processes talking over loopback TCP, as two nodes would:
- kubenova: a source serving `agent/transfer.py`'s endpoint (allocated extents only, sha256
  checked before the file is placed) and the destination's pull;
- rsync: an `rsync --daemon` module and `rsync --sparse --fsync` pulling from it (Nova
  moves disks with rsync or scp over ssh; the daemon is the same protocol without ssh's
  cipher cost, so it is the kinder baseline; --fsync because a disk hand-off must be on
  disk before the source may be deleted, and the agent fsyncs too).

Files: qcow2 disks with 1 and 4 GiB written by a guest-like writer (what the agent really
sends), and a raw 8 GiB disk holding 1 GiB (where sending only allocated data matters).
Figures: median wall time, bytes on the wire (kubenova: the HTTP body; rsync: its
"Total bytes received"), and throughput in allocated data per second.

    python -m hack.bench_transfer [--runs 3] [--dir /var/tmp/kubenova-bench-transfer]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from hack import controlplane
from kubenova.agent import transfer

REPO = pathlib.Path(__file__).resolve().parent.parent
GIB = 1024**3
TOKEN = "bench-token"  # loopback only; the agents use a random per-migration secret


def make_qcow2(path: pathlib.Path, written_gib: int) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{written_gib * 2}G"], check=True
    )
    for i in range(written_gib):  # 1 GiB per qemu-io call keeps its memory small
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {i}G 1G", str(path)],
            check=True,
            capture_output=True,
        )


def make_sparse_raw(path: pathlib.Path, size_gib: int, written_gib: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        f.truncate(size_gib * GIB)
        for i in range(written_gib):  # 1 GiB every 2 GiB: several extents, like a used disk
            f.seek(i * 2 * GIB)
            for _ in range(1024):
                f.write(block)


def _serve(path: str, port: int) -> None:
    async def lookup(namespace: str, name: str, part: transfer.Part) -> transfer.Offer | None:
        return transfer.Offer(pathlib.Path(path), TOKEN)

    web.run_app(transfer.app(lookup), host="127.0.0.1", port=port, print=None)


async def _pull(url: str, dest: pathlib.Path) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        response.raise_for_status()
        await transfer.receive(response.content, dest)
        return response.content.total_bytes


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def kubenova_run(source: pathlib.Path, dest: pathlib.Path) -> tuple[float, int]:
    port = controlplane.free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(str(source), port))
    server.start()
    try:
        _wait_port(port)
        began = time.perf_counter()
        wire = asyncio.run(_pull(f"http://127.0.0.1:{port}/v1/migrations/bench/m/disk", dest))
        return time.perf_counter() - began, wire
    finally:
        server.terminate()
        server.join()


def rsync_run(source: pathlib.Path, dest: pathlib.Path, work: pathlib.Path) -> tuple[float, int]:
    port = controlplane.free_port()
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"use chroot = no\n[disks]\npath = {source.parent}\nread only = yes\nuid = root\n"
    )
    daemon = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--port={port}", f"--config={conf}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        began = time.perf_counter()
        out = subprocess.run(
            [
                "rsync",
                "--sparse",
                "--fsync",  # durable before it reports success, like the agent's receive
                "--stats",
                f"rsync://127.0.0.1:{port}/disks/{source.name}",
                str(dest),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        elapsed = time.perf_counter() - began
    finally:
        daemon.terminate()
        daemon.wait()
    found = re.search(r"Total bytes received: ([\d,.]+)", out)
    if found is None:
        raise RuntimeError(f"no byte count in rsync --stats output:\n{out}")
    return elapsed, int(re.sub(r"[,.]", "", found.group(1)))


def allocated(path: pathlib.Path) -> int:
    return path.stat().st_blocks * 512


def same_content(a: pathlib.Path, b: pathlib.Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def measure(source: pathlib.Path, work: pathlib.Path, runs: int) -> dict[str, object]:
    results: dict[str, list[tuple[float, int]]] = {"kubenova": [], "rsync": []}
    for _ in range(runs):  # alternate, so drift on a noisy machine hits both alike
        for tool in ("kubenova", "rsync"):
            dest = work / f"received-{tool}"
            dest.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            if tool == "kubenova":
                results[tool].append(kubenova_run(source, dest))
            else:
                results[tool].append(rsync_run(source, dest, work))
            if not same_content(source, dest):
                raise RuntimeError(f"{tool}: the received disk differs from the source")
            dest.unlink()
    data = allocated(source)
    summary: dict[str, object] = {
        "file_bytes": source.stat().st_size,
        "allocated_bytes": data,
    }
    for tool, samples in results.items():
        seconds = statistics.median(s for s, _ in samples)
        summary[tool] = {
            "seconds": seconds,
            "wire_bytes": statistics.median(b for _, b in samples),
            "allocated_mib_per_s": data / (1 << 20) / seconds,
            "runs": samples,
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_transfer")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qcow2-gib", default="1,4", help="GiB written into each qcow2 disk")
    parser.add_argument(
        "--dir", type=pathlib.Path, default=pathlib.Path("/var/tmp/kubenova-bench-transfer")
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "bench-results" / "transfer.json"
    )
    args = parser.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    (args.dir / "src").mkdir(parents=True)
    cases: dict[str, pathlib.Path] = {}
    for gib in (int(g) for g in args.qcow2_gib.split(",")):
        cases[f"qcow2, {gib} GiB written"] = path = args.dir / "src" / f"disk-{gib}g.qcow2"
        make_qcow2(path, gib)
    cases["raw 8 GiB, 1 GiB written"] = raw = args.dir / "src" / "disk-sparse.raw"
    make_sparse_raw(raw, 8, 1)
    try:
        results = {name: measure(path, args.dir, args.runs) for name, path in cases.items()}
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "disk-transfer", "results": results}, indent=2))
    print(f"cross-node disk transfer over loopback, median of {args.runs} ({args.out}):")
    print(f"{'disk':<26} {'tool':<9} {'time':>8} {'on the wire':>13} {'MiB/s':>7}")
    for name, r in results.items():
        for tool in ("kubenova", "rsync"):
            t = r[tool]
            assert isinstance(t, dict)
            print(
                f"{name:<26} {tool:<9} {t['seconds']:>7.2f}s "
                f"{t['wire_bytes'] / (1 << 20):>9.1f} MiB {t['allocated_mib_per_s']:>7.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
