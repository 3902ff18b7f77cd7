"""The orphan sweep never destroys a guest on a cache's word: stripped labels leave a
running guest alone; only an Instance proven gone, twice, has its guest quarantined."""

from __future__ import annotations

import pathlib
import time

import pytest

from tests.e2e import guest
from tests.env import Env

pytestmark = pytest.mark.controlplane

SWEEP = ["--orphan-sweep-seconds=2", "--orphan-grace-seconds=6"]
LABELS = ("node", "source-node", "dest-node")


def running_domains() -> list[str]:
    return guest.domains(running_only=True)


def test_stripped_labels_never_cost_a_running_guest(env: Env, image: pathlib.Path) -> None:
    uuid = guest.booted(env, image, *SWEEP)
    assert env.controller is not None
    env.controller.stop()  # nobody puts the labels back meanwhile
    env.kubectl("label", "instance", "vm", *(f"compute.kubenova.io/{k}-" for k in LABELS))
    assert not any(
        k.startswith("compute.kubenova.io/")
        for k in env.instance("vm")["metadata"].get("labels", {})
    )
    time.sleep(3 * 6)  # three grace periods, nine sweeps: ample time to do the wrong thing
    assert uuid in running_domains(), env.logs()
    disk = env.instances_path("node-a") / uuid / "disk"
    assert disk.exists()
    assert "left alone" in env.agents["node-a"].tail(200)
    env.start_controller()
    inst = env.wait_for(
        lambda: (
            (i := env.instance("vm"))["metadata"].get("labels", {}).get("compute.kubenova.io/node")
            == "node-a"
            and i
        ),
        what="the controller restoring the node label",
    )
    assert inst["status"]["phase"] == "ACTIVE"
    guest.reboot(env, "vm")  # the same guest, its disk intact: its second boot, counted
    again = guest.boots(env, "node-a", uuid, 2)
    assert (again.marker, again.boots) == (guest.MARKER, 2)


def test_a_guest_whose_instance_is_gone_is_quarantined_not_deleted(
    env: Env, image: pathlib.Path
) -> None:
    uuid = guest.booted(env, image, *SWEEP)
    env.agents["node-a"].kill()  # deleted while its node is away
    env.kubectl("delete", "instance", "vm", "--wait=false")
    env.wait_for(
        lambda: not env.kubectl.run("get", "instance", "vm").ok,
        timeout=60,
        what="the Instance gone (its node down past serviceDownTimeSeconds)",
    )
    env.start_libvirt_agent("node-a", *SWEEP)
    root = env.instances_path("node-a")
    kept = env.wait_for(
        lambda: list((root / ".quarantine").glob(f"{uuid}-*/{uuid}/disk")),
        timeout=60,
        what="the orphan in quarantine",
    )
    assert uuid not in running_domains()
    assert not (root / uuid).exists()
    assert guest.has_marker_file(kept[0])  # everything it held is kept, for a week by default
