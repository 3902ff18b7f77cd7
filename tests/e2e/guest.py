"""Real guests for e2e tests: the image, a root disk with a marker, the guest's reports.

The test image (hack/build-guest-image.sh) prints one line to its serial console at each
boot: `KUBENOVA-GUEST cpus=N memtotal_kib=N disk_sectors=N marker=TEXT boots=N`, where TEXT
is read from the start of its root disk and `boots` is a counter the guest itself keeps on
that disk (each boot reads it, adds one and writes it back): the guest's own writes, seen
by the guest, tell whether what it wrote during VERIFY_RESIZE survived.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
from collections.abc import Callable
from typing import NamedTuple

import pytest

from tests.env import Env

REPO = pathlib.Path(__file__).resolve().parents[2]
# A whole line only: one cut short (a guest stopped while it printed) is not a report.
LINE = re.compile(
    r"KUBENOVA-GUEST cpus=(\d+) memtotal_kib=(\d+) disk_sectors=(\d+) marker=(\S*) boots=(\d+)"
)
# What the guest sees while it runs, printed on each change (a live resize): same fields.
NOW = re.compile(
    r"KUBENOVA-GUEST-NOW cpus=(\d+) memtotal_kib=(\d+) disk_sectors=(\d+) marker=(\S*) boots=(\d+)"
)
# A guest asked to write (marked_disk(writer=...)): each tick is on its disk before it is
# printed, and each boot reports the last tick its disk kept.
TICK = re.compile(r"KUBENOVA-GUEST-TICK tick=(\d+) boots=(\d+) up=[\d.]+\n")
TICKS = re.compile(r"KUBENOVA-GUEST-TICKS last=(\d+) boots=(\d+)\n")
MARKER = "kubenova-e2e-marker"
SECTORS_PER_GIB = 2 * 1024 * 1024
IMAGE = "marked"  # the image name Instances give: under the agents' --images-path


class Report(NamedTuple):
    """One boot, as the guest saw it."""

    cpus: int
    memtotal_kib: int
    disk_sectors: int
    marker: str
    boots: int  # this boot's number, counted on the guest's own disk


def images_path(env: Env) -> pathlib.Path:
    """Where the test's libvirt agents look up images by name (tests/env.py)."""
    return env.dir / "images"


def build_image() -> pathlib.Path:
    try:
        subprocess.run(
            ["virsh", "-c", "qemu:///system", "version"], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"libvirtd not running ({exc}); run hack/install-libvirt.sh")
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-guest-image.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return pathlib.Path(out.strip().splitlines()[-1])


def image_with_marker(
    guest_image: pathlib.Path, where: pathlib.Path, *, writer: str = "", fill_mib: int = 0
) -> pathlib.Path:
    """The cached kernel and initramfs, plus a root disk whose first bytes are MARKER, at
    `where` (an image named `where.name` in the images path `where.parent`)."""
    where.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img"):
        (where / name).symlink_to(guest_image / name)
    marked_disk(where / "disk.qcow2", MARKER, writer=writer, fill_mib=fill_mib)
    return where


FILL_AT = 256 << 20  # where fill data starts: clear of the marker, counters and writer ring


def marked_disk(
    path: pathlib.Path, marker: str, *, writer: str = "", fill_mib: int = 0
) -> pathlib.Path:
    """A 1 GiB qcow2 disk at `path` whose first bytes are `marker`, the rest empty but for
    `fill_mib` MiB of random data from FILL_AT on and, with `writer` (a `KUBENOVA-WRITER
    interval=S mib=N ring=R` line), the guest's order to write continuously."""
    raw = path.with_name(path.name + ".raw")
    with raw.open("wb") as f:
        f.write(marker.encode())
        if writer:
            f.seek(2 << 20)
            f.write(writer.encode())
        f.seek(FILL_AT)
        for _ in range(fill_mib):
            f.write(os.urandom(1 << 20))
        f.truncate(1024**3)  # sparse
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True
    )
    raw.unlink()
    return path


def domains(*, running_only: bool = False) -> list[str]:
    """Names of the domains this machine's libvirtd defines (or runs)."""
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--name", *([] if running_only else ["--all"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def reports(env: Env, node: str, uuid: str) -> list[Report]:
    console = env.instances_path(node) / "console" / f"{uuid}.log"
    text = console.read_text(errors="replace") if console.exists() else ""
    return [Report(int(a), int(b), int(c), d, int(e)) for a, b, c, d, e in LINE.findall(text)]


def console(env: Env, node: str, uuid: str) -> str:
    path = env.instances_path(node) / "console" / f"{uuid}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def ticks(env: Env, node: str, uuid: str, boot: int) -> list[int]:
    """The ticks the guest printed on `node` in its boot number `boot` (each on its disk)."""
    return [int(t) for t, b in TICK.findall(console(env, node, uuid)) if int(b) == boot]


def kept(env: Env, node: str, uuid: str, boot: int) -> int:
    """The last tick the guest's disk held at its boot number `boot` on `node`."""
    found = env.wait_for(
        lambda: [int(t) for t, b in TICKS.findall(console(env, node, uuid)) if int(b) == boot],
        timeout=120,
        what=f"the ticks boot #{boot} of {uuid} found on {node}",
    )
    return found[-1]  # type: ignore[no-any-return]


def now(env: Env, node: str, uuid: str, predicate: Callable[[Report], bool]) -> Report:
    """Wait for a report, at boot or of a change since, that satisfies `predicate`."""
    console = env.instances_path(node) / "console" / f"{uuid}.log"

    def found() -> Report | None:
        text = console.read_text(errors="replace") if console.exists() else ""
        for line in reversed(text.splitlines()):
            m = LINE.search(line) or NOW.search(line)
            if m:
                a, b, c, d, e = m.groups()
                report = Report(int(a), int(b), int(c), d, int(e))
                return report if predicate(report) else None
        return None

    return env.wait_for(found, timeout=120, what=f"a report of {uuid}")  # type: ignore[no-any-return]


def boots(env: Env, node: str, uuid: str, count: int) -> Report:
    """Wait for the guest's `count`-th boot report; TCG boots take ~10 s on 2 cores."""
    found = env.wait_for(
        lambda: len(r := reports(env, node, uuid)) >= count and r,
        timeout=120,
        what=f"boot report #{count} of {uuid}",
    )
    return found[count - 1]  # type: ignore[no-any-return]


def flavors(env: Env, sizes: dict[str, tuple[int, int, int]]) -> None:
    """Flavors by name: (vCPUs, memory MiB, disk GiB)."""
    for name, (vcpus, mem, disk) in sizes.items():
        env.kubectl.apply(
            {
                "apiVersion": "compute.kubenova.io/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": name},
                "spec": {"vcpus": vcpus, "memoryMiB": mem, "diskGiB": disk},
            }
        )


def booted(env: Env, image: pathlib.Path, *args: str, **agent: object) -> str:
    """Flavors e2e.one (1 vCPU, 256 MiB, 1 GiB) and e2e.two (2, 512, 2), the controller, a
    libvirt agent on node-a, and an instance `vm` booted once; returns its uuid. Its
    resizePolicy is Cold: the suites that use it are about Nova's path (power off, set
    aside, move, boot); the live path's own suites take the default."""
    flavors(env, {"e2e.one": (1, 256, 1), "e2e.two": (2, 512, 2)})
    env.start_controller()
    env.start_libvirt_agent("node-a", *args, **agent)  # type: ignore[arg-type]
    env.create("vm", "e2e.one", image=image.name, shutdownTimeoutSeconds=3, resizePolicy="Cold")
    uuid: str = env.wait_phase("vm", "ACTIVE", timeout=120)["status"]["uuid"]
    first = boots(env, "node-a", uuid, 1)
    assert (first.cpus, first.disk_sectors, first.marker, first.boots) == (
        1,
        SECTORS_PER_GIB,
        MARKER,
        1,
    )
    assert 150 * 1024 < first.memtotal_kib <= 256 * 1024  # a little under the 256 MiB given
    return uuid


def reboot(env: Env, name: str) -> None:
    """Power the instance off and on through its spec, as a user would."""
    for power, phase in (("Stopped", "SHUTOFF"), ("Running", "ACTIVE")):
        env.kubectl(
            "patch",
            "instance",
            name,
            "--type=merge",
            "-p",
            f'{{"spec":{{"powerState":"{power}"}}}}',
        )
        env.wait_phase(name, phase, timeout=120)


def has_marker_file(disk: pathlib.Path) -> bool:
    """Whether a qcow2 disk (a guest's, not running) starts with MARKER, as the guest reads it."""
    out = disk.with_name(disk.name + ".head")
    subprocess.run(
        [
            "qemu-img",
            "dd",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "bs=64",
            "count=1",
            f"if={disk}",
            f"of={out}",
        ],
        check=True,
        capture_output=True,
    )
    try:
        return out.read_bytes().startswith(MARKER.encode())
    finally:
        out.unlink()
