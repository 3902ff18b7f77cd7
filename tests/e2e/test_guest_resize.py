"""A real guest resized through the API: the guest itself reports what it runs on
(hack/build-guest-image.sh), driven with kubectl as a user would."""

from __future__ import annotations

import pathlib

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane


@pytest.fixture
def booted(env: Env, image: pathlib.Path) -> tuple[Env, str]:
    return env, guest.booted(env, image)


def test_resize_then_confirm_seen_from_inside_the_guest(booted: tuple[Env, str]) -> None:
    env, uuid = booted
    first = guest.reports(env, "node-a", uuid)[0]
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    new = guest.boots(env, "node-a", uuid, 2)
    assert (new.cpus, new.disk_sectors, new.marker) == (2, 2 * guest.SECTORS_PER_GIB, guest.MARKER)
    assert new.memtotal_kib > first.memtotal_kib + 200 * 1024  # about 256 MiB more memory
    assert new.boots == 2  # it wrote its second boot on the new disk, in VERIFY_RESIZE
    env.annotate("vm", "resize", "confirm")
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)
    assert inst["status"]["host"] == {
        **inst["status"]["host"],
        "vcpus": 2,
        "memoryMiB": 512,
        "diskGiB": 2,
    }
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()
    # What the guest wrote during VERIFY_RESIZE survived the confirm: it reads it at the next boot.
    guest.reboot(env, "vm")
    after = guest.boots(env, "node-a", uuid, 3)
    assert (after.cpus, after.marker, after.boots) == (2, guest.MARKER, 3)


def test_resize_then_revert_seen_from_inside_the_guest(booted: tuple[Env, str]) -> None:
    env, uuid = booted
    first = guest.reports(env, "node-a", uuid)[0]
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    assert guest.boots(env, "node-a", uuid, 2).cpus == 2
    env.annotate("vm", "resize", "revert")
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)
    assert inst["spec"]["flavor"] == "e2e.one"
    # The old sizes and the marker; the boot written on the discarded disk is gone with it.
    assert guest.boots(env, "node-a", uuid, 3) == first._replace(boots=2)
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()
