"""Live or cold: the checks a resize passes to be applied to the running guest, in order."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from kubenova.api import common, instance, migration
from kubenova.lifecycle import live, stages
from tests import models as m

ONE = common.FlavorSnapshot(name="one", vcpus=1, memory_mib=512, disk_gib=2)
BIG = common.FlavorSnapshot(name="big", vcpus=2, memory_mib=1024, disk_gib=4)
FEWER = common.FlavorSnapshot(name="fewer", vcpus=1, memory_mib=1024, disk_gib=4)
HUGE = common.FlavorSnapshot(name="huge", vcpus=8, memory_mib=1024, disk_gib=4)


def host(power: str = "Running", max_vcpus: int = 4, max_memory: int = 2048) -> instance.HostStatus:
    return instance.HostStatus.model_validate(
        {
            "node": "node-a",
            "powerState": power,
            "vcpus": 1,
            "memoryMiB": 512,
            "diskGiB": 2,
            "maxVcpus": max_vcpus,
            "maxMemoryMiB": max_memory,
            "observedAt": datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).isoformat(),
        }
    )


LIVE_CASE = live.Case(
    policy=live.Policy.AUTO,
    migrate=False,
    enabled=True,
    flavor_allows=True,
    same_host_allowed=True,
    old=ONE,
    new=BIG,
    host=host(),
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"migrate": True}, "a migrate moves the guest"),
        ({"policy": live.Policy.COLD}, "resizePolicy is Cold"),
        ({"enabled": False}, "turned off"),
        ({"flavor_allows": False}, "does not allow live resize"),
        ({"same_host_allowed": False}, "same host are not allowed"),
        ({"old": BIG, "new": FEWER}, "shrinks vCPUs 2 -> 1"),
        ({"host": host(power="Stopped")}, "not running"),
        ({"host": None}, "not running"),
        ({"new": HUGE}, "grow to 4 vCPUs without a reboot, not 8"),
        ({"host": host(max_vcpus=0, max_memory=0)}, "without hot-plug headroom"),
        ({"host": host(max_memory=768)}, "grow to 768 MiB"),
    ],
)
def test_each_check_makes_auto_cold_and_live_refused(
    change: dict[str, object], reason: str
) -> None:
    auto = live.choose(dataclasses.replace(LIVE_CASE, **change))  # type: ignore[arg-type]
    assert (auto.mode, auto.refused) == (live.Mode.COLD, False)
    assert reason in auto.reason
    if "policy" in change:
        return  # Cold was what was asked
    asked = live.choose(dataclasses.replace(LIVE_CASE, **{"policy": live.Policy.LIVE, **change}))  # type: ignore[arg-type]
    if change.get("migrate"):
        assert not asked.refused  # a migrate is never live, and never refused for it
    else:
        assert asked.refused
        assert reason in asked.reason


def test_a_grow_that_fits_the_headroom_is_live_and_stays_only_on_its_node() -> None:
    choice = live.choose(LIVE_CASE)
    assert (choice.mode, choice.refused) == (live.Mode.LIVE, False)
    assert live.after_placement(choice, "node-a", "node-a") == choice
    moved = live.after_placement(choice, "node-a", "node-b")
    assert moved.mode is live.Mode.COLD
    assert "node-a has no room" in moved.reason


def test_a_live_migration_runs_the_same_phases_with_the_live_duties() -> None:
    cold = m.mig(migration.MigrationPhase.PRE_MIGRATING.value)
    hot = cold.model_copy(
        update={"spec": cold.spec.model_copy(update={"mode": migration.Mode.LIVE})}
    )
    same = stages.Role.SAME_HOST
    for phase, cold_duty, live_duty in (
        ("pre-migrating", stages.Duty.SET_ASIDE, stages.Duty.KEEP_RUNNING),
        ("post-migrating", stages.Duty.BUILD, stages.Duty.PLUG),
        ("reverting", stages.Duty.RESTORE, stages.Duty.UNPLUG),
        ("confirming", stages.Duty.CONFIRM, stages.Duty.CONFIRM),
    ):
        status = {"phase": phase}
        c = cold.model_copy(update={"status": cold.status.model_copy(update=status)})
        h = hot.model_copy(update={"status": hot.status.model_copy(update=status)})
        (c_work,), (h_work,) = stages.works(c, same), stages.works(h, same)
        assert (c_work.duty, h_work.duty) == (cold_duty, live_duty)
        assert dataclasses.replace(h_work, duty=cold_duty) == c_work  # only the duty differs
