"""Benchmark: same-host resize downtime (power-off to power-on) against the data on the disk.

For 1, 4 and 8 GiB written to the guest's disk, in one run and on the same file system:
- kubenova: the libvirt driver's migrate_disk_and_power_off + finish_migration (rename
  plus a qcow2 overlay, grown), from the start of power-off until the guest is running;
- Nova-style: the same power-off, then a full copy of the disk (Nova's libvirt driver
  copies `<uuid>_resize/disk` back into `<uuid>/` before growing it), then power-on;
- and the confirm that follows (a live block pull; the guest runs, so it is no downtime).

    python -m hack.bench_resize [--sizes 1,4,8] [--runs 3] [--dir /var/tmp/kubenova-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import uuid as uuids

from kubenova.drivers import base, libvirt
from kubenova.scheduling.amounts import Amount

REPO = pathlib.Path(__file__).resolve().parent.parent
CHUNK_GIB = 1


def write_data(disk: pathlib.Path, gib: int) -> None:
    for i in range(gib):  # 1 GiB per qemu-io call keeps its memory small
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {i}G {CHUNK_GIB}G", str(disk)],
            check=True,
            capture_output=True,
        )


def one(driver: libvirt.LibvirtDriver, image: pathlib.Path, gib: int) -> dict[str, float]:
    uuid = str(uuids.uuid4())
    old, new = Amount(1, 256, gib + 2), Amount(2, 512, gib + 4)
    run = asyncio.run
    mig = str(uuids.uuid4())  # the Migration's uid: the driver marks its artefacts with it
    run(driver.spawn(base.Guest(uuid, old, image.name, power_on=False)))
    try:
        write_data(driver.root / uuid / "disk", gib)
        run(driver.power_on(uuid))

        began = time.perf_counter()
        run(driver.migrate_disk_and_power_off(uuid, migration=mig, same_host=True, timeout=0))
        run(
            driver.finish_migration(
                base.Guest(uuid, new, image.name, power_on=True), migration=mig, same_host=True
            )
        )
        overlay = time.perf_counter() - began

        began = time.perf_counter()
        run(driver.confirm_migration(uuid, migration=mig, same_host=True))
        confirm = time.perf_counter() - began

        # Nova-style on the same disk and file system: power off, copy all of it, start.
        began = time.perf_counter()
        run(driver.power_off(uuid, 0))
        disk = driver.root / uuid / "disk"
        copy = driver.root / uuid / "disk.copy"
        subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
        subprocess.run(["qemu-img", "resize", "-q", str(copy), f"{gib + 6}G"], check=True)
        copy.replace(disk)
        run(driver.power_on(uuid))
        full_copy = time.perf_counter() - began
    finally:
        run(driver.destroy(uuid))
    return {"overlay_downtime_s": overlay, "full_copy_downtime_s": full_copy, "confirm_s": confirm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_resize")
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("/var/tmp/kubenova-bench"))
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "bench-results" / "resize.json")
    args = parser.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    driver = libvirt.LibvirtDriver(
        uri="qemu:///system",
        instances_path=args.dir / "instances",
        images_path=args.dir / "images",
        virt_type="qemu",
    )
    image = args.dir / "images" / "blank"  # no disk.qcow2: a blank disk of the flavor's size
    image.mkdir(parents=True)
    results = {}
    for gib in (int(s) for s in args.sizes.split(",")):
        runs = [one(driver, image, gib) for _ in range(args.runs)]
        results[gib] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[gib]["runs"] = runs  # type: ignore[assignment]
    shutil.rmtree(args.dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"benchmark": "same-host-resize-downtime", "results": results}, indent=2)
    )
    print(f"same-host resize downtime, median of {args.runs} ({args.out}):")
    print(f"{'written':>8} {'kubenova':>10} {'full copy':>10} {'ratio':>7} {'confirm':>9}")
    for gib, r in results.items():
        ratio = r["full_copy_downtime_s"] / r["overlay_downtime_s"]
        print(
            f"{gib:>6}Gi {r['overlay_downtime_s']:>9.2f}s {r['full_copy_downtime_s']:>9.2f}s "
            f"{ratio:>6.1f}x {r['confirm_s']:>8.2f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
