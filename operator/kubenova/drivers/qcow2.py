"""qcow2 disks through qemu-img: create, convert, overlay, grow, flatten, inspect.

Blocking calls (the libvirt driver runs them on a worker thread). `-U` on reads: a disk a
running guest holds is inspected without taking its lock.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

from kubenova import faults
from kubenova.drivers import base

GIB = 1024**3


def qemu_img(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise base.DriverError(f"qemu-img {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def info(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(qemu_img("info", "--output=json", "-U", str(path)))  # type: ignore[no-any-return]


def backing_of(path: pathlib.Path) -> str | None:
    """The backing file the image header names (None: the disk stands alone)."""
    return info(path).get("backing-filename")


def virtual_gib(path: pathlib.Path) -> int:
    return int(info(path)["virtual-size"]) // GIB


def create(path: pathlib.Path, gib: int) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(path), f"{gib}G")


def convert(source: pathlib.Path, path: pathlib.Path) -> None:
    qemu_img("convert", "-q", "-O", "qcow2", str(source), str(path))


def overlay(backing: pathlib.Path, path: pathlib.Path) -> None:
    """A new disk at `path` that reads what it has not written from `backing`."""
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(path))


def grow(path: pathlib.Path, gib: int) -> None:
    """To `gib` GiB of virtual size; never shrinks (that would cut the guest's filesystem)."""
    current = int(info(path)["virtual-size"])
    if gib * GIB < current:
        raise base.DriverError(f"disks never shrink: {current // GIB} GiB -> {gib} GiB")
    if gib * GIB > current:
        qemu_img("resize", "-q", str(path), f"{gib}G")


def commit(top: pathlib.Path) -> None:
    """Write `top`'s data into its backing file (grown to `top`'s size first), keeping `top`
    as it is (`-d`): run again after a crash, it writes the same data (the guest is off)."""
    backing = backing_of(top)
    if backing is None:
        raise base.DriverError(f"{top} has no backing file to commit into")
    grow(pathlib.Path(backing), -(-int(info(top)["virtual-size"]) // GIB))
    qemu_img("commit", "-q", "-d", "-f", "qcow2", str(top))


def rebase_unsafe(path: pathlib.Path, backing: pathlib.Path) -> None:
    """Name `backing` as `path`'s backing file without reading either: for an overlay that
    arrived from another node, whose header names the source's path for the same data."""
    qemu_img("rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(path))


def flatten(path: pathlib.Path) -> None:
    """Copy the backing data into `path` and drop its backing file (the guest is off)."""
    if faults.fail_once("agent", "libvirt:rebase"):
        raise base.DriverError(f"qemu-img rebase {path}: injected failure")
    qemu_img("rebase", "-q", "-f", "qcow2", "-b", "", str(path))
