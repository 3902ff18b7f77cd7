"""The guest's data through the failure paths, with real guests: a confirm whose block
pull fails, an artefact left by an earlier attempt, a cross-node attempt that fails after
the disk arrived, a guest that stops by itself. What the guest reads is the proof."""

from __future__ import annotations

import json
import pathlib
import subprocess
import uuid as uuids

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

STALE = "stale-data-from-an-earlier-attempt"


def plant_disk(directory: pathlib.Path, marker: str, **markers: str) -> None:
    """A qcow2 disk whose first bytes are `marker`, with kubenova's marker files beside it."""
    directory.mkdir(parents=True)
    guest.marked_disk(directory / "disk", marker)
    for name, value in markers.items():
        (directory / name).write_text(value)


def migration_of(env: Env) -> dict[str, object]:
    migs = sorted(env.migrations(), key=lambda m: m["metadata"]["creationTimestamp"])
    return migs[-1]


def test_a_confirm_whose_block_pull_fails_keeps_the_new_disk_and_is_retried(
    env: Env, image: pathlib.Path
) -> None:
    uuid = guest.booted(env, image, fault="agent:fail-once:libvirt:block-pull")
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    assert guest.boots(env, "node-a", uuid, 2).boots == 2  # written on the new disk
    env.annotate("vm", "resize", "confirm")
    warned = env.wait_for(
        lambda: [e for e in env.events("vm") if e[1] == "ConfirmFailed"],
        timeout=120,
        what="the ConfirmFailed event",
    )
    assert "ended without completing" in warned[0][2]
    assert "revert point is kept" in warned[0][2]
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)  # retried with backoff, then confirmed
    assert inst["status"]["flavor"]["name"] == "e2e.two"
    cond = next(c for c in inst["status"]["conditions"] if c["type"] == "ConfirmFailed")
    assert cond["status"] == "False"
    phases = [t["phase"] for t in migration_of(env)["status"]["phaseTransitions"]]  # type: ignore[index]
    assert phases[-4:] == ["confirming", "finished", "confirming", "confirmed"]
    assert not (env.instances_path("node-a") / f"{uuid}_resize").exists()
    guest.reboot(env, "vm")  # the disk stands alone and holds what the guest wrote
    after = guest.boots(env, "node-a", uuid, 3)
    assert (after.cpus, after.marker, after.boots) == (2, guest.MARKER, 3)


def test_a_stale_revert_point_never_replaces_current_data(env: Env, image: pathlib.Path) -> None:
    uuid = guest.booted(env, image)
    aside = env.instances_path("node-a") / f"{uuid}_resize"
    plant_disk(
        aside, STALE, **{".set-aside-for": str(uuids.uuid4()), ".kubenova-instance": "default/vm"}
    )
    assert env.resize("vm", "e2e.two").ok
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=120)
    seen = guest.boots(env, "node-a", uuid, 2)
    assert (seen.cpus, seen.marker, seen.boots) == (2, guest.MARKER, 2)
    env.annotate("vm", "resize", "revert")
    env.wait_phase("vm", "ACTIVE", timeout=120)
    back = guest.boots(env, "node-a", uuid, 3)
    assert (back.cpus, back.marker, back.boots) == (1, guest.MARKER, 2)  # the current original
    quarantined = list((env.instances_path("node-a") / ".quarantine").glob(f"{uuid}_resize-*"))
    assert len(quarantined) == 1  # the stale directory: kept aside, not deleted


@pytest.fixture
def two_nodes(env: Env, image: pathlib.Path) -> tuple[Env, str]:
    uuid = guest.booted(env, image, shared_libvirtd=True)
    return env, uuid


def test_a_leftover_disk_on_the_destination_is_never_taken_for_the_guests(
    two_nodes: tuple[Env, str],
) -> None:
    env, uuid = two_nodes
    plant_disk(
        env.instances_path("node-b") / uuid,
        STALE,
        **{".received-for": str(uuids.uuid4()), ".kubenova-instance": "default/vm"},
    )
    env.start_libvirt_agent("node-b", shared_libvirtd=True)
    env.annotate("vm", "migrate", "node-b")
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    seen = guest.boots(env, "node-b", uuid, 1)
    assert (seen.marker, seen.boots) == (guest.MARKER, 2)  # the guest's own disk, transferred
    env.annotate("vm", "resize", "confirm")
    env.wait_phase("vm", "ACTIVE", timeout=120)


def test_a_cross_node_attempt_that_fails_after_the_transfer_leaves_nothing_behind(
    two_nodes: tuple[Env, str],
) -> None:
    env, uuid = two_nodes
    env.start_libvirt_agent("node-b", shared_libvirtd=True, fault="agent:fail-once:libvirt:define")
    env.annotate("vm", "migrate", "node-b")
    failed = env.wait_for(
        lambda: [e for e in env.events("vm") if e[1] == "MigrationFailed"],
        timeout=180,
        what="the migration's failure",
    )
    assert "injected failure" in failed[0][2]
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)  # the original runs again on node-a
    assert inst["status"]["node"] == "node-a"
    env.wait_for(
        lambda: not (env.instances_path("node-b") / uuid).exists(),
        timeout=60,
        what="node-b removing what it received",
    )
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.marker, back.boots) == (guest.MARKER, 2)
    env.annotate("vm", "migrate", "node-b")  # the next attempt transfers again, and works
    env.wait_phase("vm", "VERIFY_RESIZE", timeout=180)
    seen = guest.boots(env, "node-b", uuid, 1)
    assert (seen.marker, seen.boots) == (guest.MARKER, 3)


@pytest.mark.parametrize(
    "how",
    [
        "destroy",  # a crash of QEMU
        "shutdown",  # the ACPI button: the guest's own OS powers off (acpid: poweroff -f)
    ],
)
def test_a_guest_that_stops_by_itself_is_shutoff_and_not_restarted(
    env: Env, image: pathlib.Path, how: str
) -> None:
    uuid = guest.booted(env, image, "--resync-seconds=2")
    # Behind kubenova's back: nothing asked the agent to stop it.
    subprocess.run(["virsh", "-c", "qemu:///system", how, uuid], check=True, capture_output=True)
    inst = env.wait_phase("vm", "SHUTOFF", timeout=30)
    assert inst["spec"]["powerState"] == "Stopped"  # Nova's power sync: stopped, as by the API
    assert any(e[1] == "StoppedByGuest" for e in env.events("vm"))
    assert len(guest.reports(env, "node-a", uuid)) == 1  # never booted again behind our back
    env.kubectl(
        "patch",
        "instance",
        "vm",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"powerState": "Running"}}),
    )
    env.wait_phase("vm", "ACTIVE", timeout=120)
    assert guest.boots(env, "node-a", uuid, 2).boots == 2


def test_a_move_between_nodes_that_share_instances_path_is_refused_and_loses_nothing(
    env: Env, image: pathlib.Path
) -> None:
    """Two agents given one instancesPath (docs/libvirt-driver.md: detected, refused)."""
    uuid = guest.booted(env, image, shared_libvirtd=True)
    env.start_libvirt_agent("node-b", shared_libvirtd=True, instances_of="node-a")
    env.annotate("vm", "migrate", "node-b")
    failed = env.wait_for(
        lambda: [e for e in env.events("vm") if e[1] == "MigrationFailed"],
        timeout=180,
        what="the refusal",
    )
    assert "shares its instancesPath with the source" in failed[0][2]
    inst = env.wait_phase("vm", "ACTIVE", timeout=120)
    assert inst["status"]["node"] == "node-a"
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.marker, back.boots) == (guest.MARKER, 2)  # the original, restarted in place
    assert not (env.instances_path("node-a") / ".quarantine").exists()  # nothing moved aside


def test_a_guest_deleted_outside_kubenova_is_said_and_defined_again_from_its_disk(
    env: Env, image: pathlib.Path
) -> None:
    """virsh destroy + undefine behind kubenova's back: the disk is still the node's. The
    instance says the guest is missing (Ready=False, a Warning), the agent defines it
    again from that disk, and the guest boots its own data: the image's marker and its
    boot counter, which lives on the disk, at 2 (a disk made from the image would say 1)."""
    uuid = guest.booted(env, image, "--resync-seconds=2")
    virsh = ["virsh", "-c", "qemu:///system"]
    # Undefined while it runs (it turns transient), then stopped: gone in one step, as a
    # deleted VirtualMachine is (a stop first would be a guest that stopped by itself).
    subprocess.run([*virsh, "undefine", uuid], check=True, capture_output=True)
    subprocess.run([*virsh, "destroy", uuid], check=True, capture_output=True)

    env.wait_for(
        lambda: any(e[1] == "GuestMissing" for e in env.events("vm")),
        timeout=60,
        what="a GuestMissing event",
    )
    back = guest.boots(env, "node-a", uuid, 2)
    assert (back.marker, back.boots, back.disk_sectors) == (
        guest.MARKER,
        2,
        guest.SECTORS_PER_GIB,
    ), back
    inst = env.wait_phase("vm", "ACTIVE", timeout=60)
    ready = next(c for c in inst["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Running")
    assert inst["spec"]["powerState"] == "Running"
    assert any(e[1] == "GuestRedefined" for e in env.events("vm"))
    assert not inst["status"]["host"].get("missing")
