"""A real guest resized through the API: the guest itself reports what it runs on.

The test image (hack/build-guest-image.sh) prints one line to its serial console at each
boot: `KUBENOVA-GUEST cpus=N memtotal_kib=N disk_sectors=N marker=TEXT`, where TEXT is
read from the start of its root disk. The instance is driven with kubectl as a user would.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest

from tests.env import Env

pytestmark = pytest.mark.controlplane

REPO = pathlib.Path(__file__).resolve().parents[2]
LINE = re.compile(r"KUBENOVA-GUEST cpus=(\d+) memtotal_kib=(\d+) disk_sectors=(\d+) marker=(\S*)")
MARKER = "kubenova-e2e-marker"
SECTORS_PER_GIB = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def guest_image() -> pathlib.Path:
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


def image_with_marker(guest_image: pathlib.Path, where: pathlib.Path) -> pathlib.Path:
    """The cached kernel and initramfs, plus a root disk whose first bytes are MARKER."""
    where.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (where / name).symlink_to(guest_image / name)
    raw = where / "disk.raw"
    with raw.open("wb") as f:
        f.write(MARKER.encode())
        f.truncate(1024**3)  # sparse
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(raw),
            str(where / "disk.qcow2"),
        ],
        check=True,
    )
    raw.unlink()
    return where


def reports(env: Env, node: str, uuid: str) -> list[tuple[int, int, int, str]]:
    console = env.instances_path(node) / "console" / f"{uuid}.log"
    text = console.read_text(errors="replace") if console.exists() else ""
    return [(int(a), int(b), int(c), d) for a, b, c, d in LINE.findall(text)]


def boots(env: Env, node: str, uuid: str, count: int) -> tuple[int, int, int, str]:
    """Wait for the guest's `count`-th boot report; TCG boots take ~10 s on 2 cores."""
    found = env.wait_for(
        lambda: len(r := reports(env, node, uuid)) >= count and r,
        timeout=120,
        what=f"boot report #{count} of {uuid}",
    )
    return found[count - 1]  # type: ignore[no-any-return]


@pytest.fixture
def booted(env: Env, guest_image: pathlib.Path, tmp_path: pathlib.Path) -> tuple[Env, str]:
    image = image_with_marker(guest_image, tmp_path / "image")
    for name, vcpus, mem, disk in (("e2e.one", 1, 256, 1), ("e2e.two", 2, 512, 2)):
        env.kubectl.apply(
            {
                "apiVersion": "compute.kubenova.io/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": name},
                "spec": {"vcpus": vcpus, "memoryMiB": mem, "diskGiB": disk},
            }
        )
    env.start_controller()
    env.start_libvirt_agent("node-a")
    env.create("vm", "e2e.one", image=str(image), shutdownTimeoutSeconds=3)
    uuid = env.wait_phase("vm", "ACTIVE", timeout=120)["status"]["uuid"]
    cpus, mem, sectors, marker = boots(env, "node-a", uuid, 1)
    assert (cpus, sectors, marker) == (1, SECTORS_PER_GIB, MARKER)
    assert 150 * 1024 < mem <= 256 * 1024  # MemTotal is a little under the 256 MiB given
    return env, uuid


def test_resize_then_confirm_seen_from_inside_the_guest(booted: tuple[Env, str]) -> None:
    env, uuid = booted
    first = reports(env, "node-a", uuid)[0]
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    cpus, mem, sectors, marker = boots(env, "node-a", uuid, 2)
    assert (cpus, sectors, marker) == (2, 2 * SECTORS_PER_GIB, MARKER)
    assert mem > first[1] + 200 * 1024  # about 256 MiB more memory
    env.annotate("vm", "resize", "confirm")
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)
    assert inst["status"]["host"] == {
        **inst["status"]["host"],
        "vcpus": 2,
        "memoryMiB": 512,
        "diskGiB": 2,
    }
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()


def test_resize_then_revert_seen_from_inside_the_guest(booted: tuple[Env, str]) -> None:
    env, uuid = booted
    first = reports(env, "node-a", uuid)[0]
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    assert boots(env, "node-a", uuid, 2)[0] == 2
    env.annotate("vm", "resize", "revert")
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)
    assert inst["spec"]["flavor"] == "e2e.one"
    assert boots(env, "node-a", uuid, 3) == first  # the old sizes and the marker
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()
