"""Benchmark (issue 13): what a resize or a move costs the guest, by how it is done.

One run, side by side, on a real TCG guest that ticks every 0.2 s (each tick fsynced on
its disk, then printed with its uptime), idle (ticks only) or writing (1 MiB of new data
per tick too), with 1, 4 and 8 GiB of data on its disk:

  (a) live resize (1 -> 2 vCPU, 256 -> 512 MiB, disk +1 GiB): reboots, and the longest
      pause the guest saw (the host's gap between two ticks minus the guest's own);
  (b) same-node cold resize: rename + overlay, power off and on;
  (c) cross-node cold move with pre-copy: the base sent while the guest runs, the delta
      after power-off, assembled on the destination;
  (d) the same move without pre-copy (Nova-style): the whole disk after power-off.

Downtime is what the Migration records (`downtimeSeconds`): from the power-off request to
the guest started again; `dark` adds the guest's own boot, from its last tick before to
its first tick after (TCG boots take ~10 s here). Everything runs through the libvirt
driver and the agents' transfer code (HTTP on loopback, as two agents on one machine do
in the e2e tests), not through a control plane: the figures are the data path's.

    python -m hack.bench_downtime [--sizes 1,4,8] [--loads idle,writing] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid as uuids
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from kubenova.agent import transfer
from kubenova.drivers import base, libvirt
from kubenova.scheduling.amounts import Amount

REPO = pathlib.Path(__file__).resolve().parent.parent
TICK = re.compile(r"KUBENOVA-GUEST-TICK tick=(\d+) boots=(\d+) up=([\d.]+)\n")
TOKEN = "bench"
FILL_AT_GIB = 1  # data from 1 GiB on: clear of the guest's counters and its writer ring
WRITERS = {
    "idle": "KUBENOVA-WRITER interval=0.2 mib=0 ring=64",
    "writing": "KUBENOVA-WRITER interval=0.2 mib=1 ring=256",
}
SHUTDOWN_SECONDS = 10.0  # graceful, as an agent's default would be (the guest obeys ACPI)


@dataclasses.dataclass
class Ticks:
    """A guest's ticks as the host saw them arrive on its console: (host time, tick, up)."""

    console: pathlib.Path
    seen: list[tuple[float, int, float]] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        stop = threading.Event()

        def tail() -> None:
            offset, rest = 0, ""
            while not stop.is_set():
                if self.console.exists():
                    if self.console.stat().st_size < offset:  # removed and written afresh
                        offset, rest = 0, ""
                    with self.console.open(errors="replace") as f:
                        f.seek(offset)
                        chunk = f.read()
                        offset = f.tell()
                    now = time.perf_counter()
                    rest += chunk
                    for m in TICK.finditer(rest):
                        self.seen.append((now, int(m[1]), float(m[3])))
                    rest = rest[rest.rfind("\n") + 1 :]
                stop.wait(0.01)

        thread = threading.Thread(target=tail, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def wait(self, count: int, after: float, timeout: float = 180) -> None:
        deadline = time.perf_counter() + timeout
        while sum(1 for t, _, _ in self.seen if t > after) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no {count} ticks on {self.console} after {timeout:.0f}s")
            time.sleep(0.05)

    def dark(self, stopped: float) -> float:
        """From the last tick before `stopped` to the first one after it."""
        before = max(t for t, _, _ in self.seen if t <= stopped)
        after = min(t for t, _, _ in self.seen if t > stopped)
        return after - before

    def pause(self, start: float, end: float) -> float:
        """The longest time the guest did not run between `start` and `end`: the host's
        gap between consecutive ticks less the guest's own (its clock stops when paused)."""
        window = [(t, up) for t, _, up in self.seen if start - 1 <= t <= end + 1]
        gaps = [(t2 - t1) - (u2 - u1) for (t1, u1), (t2, u2) in itertools.pairwise(window)]
        return max([0.0, *gaps])


class Bench:
    def __init__(self, root: pathlib.Path, guest_image: pathlib.Path) -> None:
        self.root = root
        self.images = root / "images"
        self.guest_image = guest_image
        self.a, self.b = (
            libvirt.LibvirtDriver(
                uri="qemu:///system",
                instances_path=root / node,
                images_path=self.images,
                virt_type="qemu",
                domain_prefix=f"bench-{node}",
            )
            for node in ("a", "b")
        )
        self.offers: dict[str, pathlib.Path] = {}  # "<migration>/<part>" -> file on node a
        self.port = 0

    def image(self, gib: int, load: str) -> str:
        name = f"data-{gib}g-{load}"
        where = self.images / name
        where.mkdir(parents=True)
        for name_ in ("vmlinuz", "initrd.img"):
            (where / name_).symlink_to(self.guest_image / name_)
        disk, raw = where / "disk.qcow2", where / "disk.raw"
        with raw.open("wb") as f:  # the writer's order at 2 MiB, the rest sparse
            f.seek(2 << 20)
            f.write(WRITERS[load].encode())
            f.truncate((gib + FILL_AT_GIB + 1) << 30)
        convert = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)]
        subprocess.run(convert, check=True)
        raw.unlink()
        for i in range(gib):  # 1 GiB per call keeps qemu-io's memory small
            qemu_io(disk, f"write -P 0x5a {FILL_AT_GIB + i}G 1G")
        return name

    async def serve(self) -> web.AppRunner:
        async def lookup(namespace: str, name: str, part: transfer.Part) -> transfer.Offer | None:
            path = self.offers.get(f"{name}/{part.value}")
            return transfer.Offer(path, TOKEN) if path is not None else None

        runner = web.AppRunner(transfer.app(lookup), access_log=None)
        await runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    async def pull(self, uuid: str, mig: str, part: transfer.Part) -> int:
        dest = await self.b.prepare_incoming(uuid, migration=mig, owner="bench/vm", part=part)
        assert dest is not None
        offered = self.a.disk_path(uuid, migration=mig, part=part)
        assert offered is not None, f"node a does not serve {part.value}"
        self.offers[f"{mig}/{part.value}"] = offered
        url = f"http://127.0.0.1:{self.port}/v1/migrations/bench/{mig}/{part.value}"
        _, received = await transfer.pull(url, TOKEN, dest)
        return received

    async def one(self, gib: int, load: str) -> dict[str, Any]:
        image = self.image(gib, load)
        uuid = str(uuids.uuid4())
        small, big = Amount(1, 256, gib + 2), Amount(2, 512, gib + 3)
        a, b = self.a, self.b
        ticks = Ticks(a.console_log(uuid))
        ticks_b = Ticks(b.console_log(uuid))
        out: dict[str, Any] = {}
        await a.spawn(base.Guest(uuid, small, image, power_on=True))
        try:
            with ticks.watching(), ticks_b.watching():
                ticks.wait(10, 0)
                out["live"] = await self.live(uuid, image, small, big, ticks)
                out["same_node_cold"] = await self.same_node(uuid, image, small, big, ticks)
                for pre_copy in (True, False):
                    key = "cross_node_pre_copy" if pre_copy else "cross_node_full"
                    out[key] = await self.cross_node(
                        uuid, image, small, pre_copy=pre_copy, ticks=ticks, on_b=ticks_b
                    )
        finally:
            await b.destroy(uuid)
            await a.destroy(uuid)
            shutil.rmtree(self.images / image)
        return out

    async def live(
        self, uuid: str, image: str, small: Amount, big: Amount, ticks: Ticks
    ) -> dict[str, float]:
        mig = str(uuids.uuid4())
        boots = _boots(self.a, uuid)
        began = time.perf_counter()
        await self.a.resize_live(base.Guest(uuid, big, image, power_on=True), migration=mig)
        took = time.perf_counter() - began
        ticks.wait(10, time.perf_counter())  # two seconds more of the guest's own view
        result = {
            "reboots": _boots(self.a, uuid) - boots,
            "pause_s": ticks.pause(began, began + took),
            "step_s": took,
        }
        await self.a.revert_live(
            base.Guest(uuid, small, image, power_on=True), migration=mig, timeout=SHUTDOWN_SECONDS
        )
        ticks.wait(10, time.perf_counter())
        return result

    async def same_node(
        self, uuid: str, image: str, small: Amount, big: Amount, ticks: Ticks
    ) -> dict[str, float]:
        mig = str(uuids.uuid4())
        stopped = time.perf_counter()
        await self.a.migrate_disk_and_power_off(
            uuid, migration=mig, same_host=True, timeout=SHUTDOWN_SECONDS
        )
        await self.a.finish_migration(
            base.Guest(uuid, big, image, power_on=True), migration=mig, same_host=True
        )
        started = time.perf_counter()
        ticks.wait(5, started)
        result = {"downtime_s": started - stopped, "dark_s": ticks.dark(stopped)}
        await self.a.finish_revert_migration(
            base.Guest(uuid, small, image, power_on=True), migration=mig, same_host=True
        )
        ticks.wait(10, time.perf_counter())
        return result

    async def cross_node(
        self, uuid: str, image: str, small: Amount, *, pre_copy: bool, ticks: Ticks, on_b: Ticks
    ) -> dict[str, float]:
        mig = str(uuids.uuid4())
        a, b, disk = self.a, self.b, transfer.Part.DISK
        result: dict[str, float] = {}
        if pre_copy:
            began = time.perf_counter()
            assert await a.freeze_base(uuid, migration=mig)
            result["while_running_bytes"] = await self.pull(uuid, mig, disk)
            result["pre_copy_s"] = time.perf_counter() - began
        stopped = time.perf_counter()
        await a.migrate_disk_and_power_off(
            uuid, migration=mig, same_host=False, timeout=SHUTDOWN_SECONDS
        )
        part = transfer.Part.DELTA if pre_copy else disk
        result["after_stop_bytes"] = await self.pull(uuid, mig, part)
        await b.finish_migration(
            base.Guest(uuid, small, image, power_on=True), migration=mig, same_host=False
        )
        started = time.perf_counter()
        on_b.wait(5, started)
        result["downtime_s"] = started - stopped
        result["dark_s"] = min(t for t, _, _ in on_b.seen if t > stopped) - max(
            t for t, _, _ in ticks.seen if t <= stopped
        )
        # Reverted, so the next run starts from node a again (and the original is exact).
        await b.power_off(uuid, 0)
        await b.release_migration(uuid, migration=mig)
        await a.finish_revert_migration(
            base.Guest(uuid, small, image, power_on=True), migration=mig, same_host=False
        )
        ticks.wait(10, time.perf_counter())
        return result


def _boots(driver: libvirt.LibvirtDriver, uuid: str) -> int:
    text = driver.console_log(uuid).read_text(errors="replace")
    return text.count("KUBENOVA-GUEST-TICKS ")


def qemu_io(disk: pathlib.Path, command: str) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(disk)], check=True, capture_output=True
    )


def guest_image() -> pathlib.Path:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-guest-image.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return pathlib.Path(out.strip().splitlines()[-1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(args.dir, ignore_errors=True)
    bench = Bench(args.dir, guest_image())
    runner = await bench.serve()
    results: dict[str, Any] = {}
    try:
        for gib in (int(s) for s in args.sizes.split(",")):
            for load in args.loads.split(","):
                runs = [await bench.one(gib, load) for _ in range(args.runs)]
                results[f"{gib}GiB/{load}"] = {
                    mode: {k: statistics.median(r[mode][k] for r in runs) for k in runs[0][mode]}
                    for mode in runs[0]
                }
    finally:
        await runner.cleanup()
        shutil.rmtree(args.dir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_downtime")
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--loads", default="idle,writing")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("/var/tmp/kubenova-down"))
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "bench-results" / "downtime.json"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "downtime", "results": results}, indent=2))
    print(f"guest downtime by path, median of {args.runs} ({args.out}):")
    print(
        f"{'case':>14} {'live pause':>10} {'reboots':>7} {'cold':>7} {'pre-copy':>9} "
        f"{'full':>7} {'ratio':>6} {'pre-copy dark':>13} {'full dark':>9} {'delta MiB':>9}"
    )
    for case, r in results.items():
        pre, full = r["cross_node_pre_copy"], r["cross_node_full"]
        print(
            f"{case:>14} {r['live']['pause_s']:>9.2f}s {r['live']['reboots']:>7.0f} "
            f"{r['same_node_cold']['downtime_s']:>6.2f}s {pre['downtime_s']:>8.2f}s "
            f"{full['downtime_s']:>6.2f}s {full['downtime_s'] / pre['downtime_s']:>5.1f}x "
            f"{pre['dark_s']:>12.2f}s {full['dark_s']:>8.2f}s "
            f"{pre['after_stop_bytes'] / 2**20:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
