"""decide() through the failure paths of a migration: a confirm that fails, a node that is
down while a confirm or a revert waits for it, a guest that stops by itself."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kubenova.api import names
from kubenova.lifecycle import instance as lc
from kubenova.lifecycle import plan
from tests import models as m
from tests.unit.lifecycle.test_instance import PLACED_B, applied, obs, reasons, verifying

P = lc.moving.MPhase
CONFIRM = {names.ANNOTATION_RESIZE: "confirm"}


def at(seconds: float) -> datetime.datetime:
    return m.T0 + datetime.timedelta(seconds=seconds)


def failed_confirm(times: int = 1, dest: str = "node-a") -> list[tuple[str, datetime.datetime]]:
    path = ["pre-migrating", "migrating", "post-migrating", "finished"]
    path += ["confirming", "finished"] * times
    return [(p, at(i)) for i, p in enumerate(path)]


def test_a_failed_confirm_shows_verify_resize_with_a_condition_and_is_retried_later() -> None:
    history = failed_confirm()
    last = history[-1][1]
    mig = m.mig("finished", transitions=history)
    mig = mig.model_copy(update={"status": mig.status.model_copy(update={"message": "ENOSPC"})})
    early = lc.decide(obs(verifying(annotations=CONFIRM), migration=mig, now=last))
    assert early.migration_phase is None
    assert early.requeue_after == 5.0  # retry_base_seconds, doubled per failure, capped
    cond = next(c for c in early.status["conditions"] if c["type"] == "ConfirmFailed")  # type: ignore[index]
    assert (cond["status"], cond["reason"]) == ("True", "ConfirmFailed")
    assert "ENOSPC" in cond["message"]
    assert "revert point is kept" in cond["message"]
    assert reasons(early) == ["ConfirmFailed"]
    later = lc.decide(
        obs(verifying(annotations=CONFIRM), migration=mig, now=last + datetime.timedelta(seconds=5))
    )
    assert later.migration_phase == plan.PhaseChange("vm-abc", P.FINISHED, P.CONFIRMING)


def test_confirm_retries_back_off_exponentially_up_to_the_cap() -> None:
    history = failed_confirm(times=4)
    mig = m.mig("finished", transitions=history)
    p = lc.decide(obs(verifying(annotations=CONFIRM), migration=mig, now=history[-1][1]))
    assert p.requeue_after == 40.0  # 5 * 2**3
    capped = lc.decide(
        obs(verifying(annotations=CONFIRM), migration=mig, now=history[-1][1], retry_cap_seconds=30)
    )
    assert capped.requeue_after == 30.0


def test_a_revert_after_a_failed_confirm_is_taken_at_once() -> None:
    mig = m.mig("finished", transitions=failed_confirm())
    revert = {names.ANNOTATION_RESIZE: "revert"}
    p = lc.decide(obs(verifying(annotations=revert), migration=mig, now=at(6)))
    assert p.migration_phase == plan.PhaseChange("vm-abc", P.FINISHED, P.REVERTING)


def test_a_confirm_whose_source_is_down_completes_on_the_controllers_side() -> None:
    confirming = m.mig("confirming", dest="node-b")
    seen = at(-120)
    o = obs(verifying(dest="node-b", annotations=CONFIRM), migration=confirming)
    o = lc.Observed(
        **{**o.__dict__, "hosts_up": frozenset({"node-b"}), "last_seen": {"node-a": seen}}
    )
    p = lc.decide(o)
    assert p.migration_phase == plan.PhaseChange(
        "vm-abc", P.CONFIRMING, P.CONFIRMED, status={"sourceDownSince": seen.isoformat()}
    )
    assert reasons(p) == ["ConfirmedWithoutSource"]
    assert "node-a" in p.events[0].message
    assert "removes its copy when it returns" in p.events[0].message


def test_a_confirm_whose_source_is_up_waits_and_looks_again() -> None:
    p = lc.decide(
        obs(
            verifying(dest="node-b", annotations=CONFIRM),
            migration=m.mig("confirming", dest="node-b"),
        )
    )
    assert p.migration_phase is None
    assert p.requeue_after == lc.moving.NODE_RECHECK_SECONDS


def test_a_revert_waits_for_a_down_destination_and_says_so() -> None:
    reverting = m.mig("reverting", dest="node-b")
    o = obs(verifying(dest="node-b"), migration=reverting)
    o = lc.Observed(
        **{**o.__dict__, "hosts_up": frozenset({"node-a"}), "last_seen": {"node-b": at(-60)}}
    )
    p = lc.decide(o)
    assert p.migration_phase is None  # never without the destination: no guest runs twice
    cond = next(c for c in p.status["conditions"] if c["type"] == "NodeDown")  # type: ignore[index]
    assert (cond["status"], cond["reason"]) == ("True", "DestinationDown")
    assert "node-b" in cond["message"]
    assert "since" in cond["message"]
    assert reasons(p) == ["DestinationDown"]
    assert p.requeue_after == lc.moving.NODE_RECHECK_SECONDS


def _ready_since(when: datetime.datetime) -> dict[str, str]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": when.isoformat(),
    }


def test_a_guest_that_stopped_by_itself_stops_the_instance() -> None:
    ready = _ready_since(m.T0)
    stopped = m.active(host=m.host(power="Stopped", at=at(30)), conditions=[ready])
    i = m.inst(status=stopped, labels={names.LABEL_NODE: "node-a"})
    p = lc.decide(obs(i))
    assert p.main == {"spec": {"powerState": "Stopped"}}
    assert p.status is not None
    assert p.status["phase"] == "SHUTOFF"
    assert reasons(p) == ["StoppedByGuest"]


@pytest.mark.parametrize(("reporter", "stops"), [("node-a", True), ("node-b", False)])
def test_only_the_instance_node_report_can_stop_it(reporter: str, stops: bool) -> None:
    """Found in kind: after a move to node-a was confirmed, the source node-b, its cache a
    step behind, reported its stopped copy, and the running guest on node-a was taken for
    one that stopped by itself."""
    ready = _ready_since(m.T0)
    report = {**m.host(power="Stopped", at=at(30)), "node": reporter}
    stopped = m.active(node="node-a", host=report, conditions=[ready])
    p = lc.decide(obs(m.inst(status=stopped, labels={names.LABEL_NODE: "node-a"})))
    assert (reasons(p) == ["StoppedByGuest"]) is stops
    assert (p.main == {"spec": {"powerState": "Stopped"}}) is stops


def test_a_stale_stopped_report_does_not_stop_the_instance() -> None:
    ready = _ready_since(at(60))
    stale = m.active(host=m.host(power="Stopped", at=at(30)), conditions=[ready])
    p = lc.decide(obs(m.inst(status=stale, labels={names.LABEL_NODE: "node-a"})))
    assert p.main is None or "spec" not in p.main


@pytest.mark.parametrize(
    ("seen", "stops"),
    [(-60, False), (0, True), (None, False)],
    ids=["report-older-than-ready", "report-after-ready", "old-agent-falls-back-to-its-clock"],
)
def test_a_skewed_node_clock_cannot_make_a_stale_report_stop_the_guest(
    seen: int | None, stops: bool
) -> None:
    """The node's clock is an hour ahead (observedAt far after Ready): only the transition
    it echoes tells a fresh Stopped report from a stale one."""
    ready = _ready_since(m.T0)
    report = m.host(power="Stopped", at=at(3600))
    if seen is not None:
        report["seenTransition"] = at(seen).isoformat()
    elif not stops:
        report["observedAt"] = at(-30).isoformat()  # an old agent whose clock is right
    status = m.active(host=report, conditions=[ready])
    p = lc.decide(obs(m.inst(status=status, labels={names.LABEL_NODE: "node-a"})))
    assert (p.main == {"spec": {"powerState": "Stopped"}}) is stops


def start_ready(conditions: list[dict[str, str]]) -> list[Any]:
    return m.inst(status=m.active(conditions=conditions)).status.conditions


def test_ready_goes_false_for_a_move_and_a_revert() -> None:
    """A cold move and a revert each end in a new Ready transition: a report the node made
    before it (the source's, of its stopped original; found in CI: StoppedByGuest right
    after a revert) is older than that transition and cannot pass for the guest's state."""
    ready = [_ready_since(m.T0)]
    start = lc.decide(
        obs(m.inst(flavor="m1.small", status=m.active(conditions=ready),
                   labels={names.LABEL_NODE: "node-a"})),
        PLACED_B,
    )  # fmt: skip
    assert start.create_migration is not None
    moving = next(c for c in start.status["conditions"] if c["type"] == "Ready")  # type: ignore[index]
    assert (moving["status"], moving["reason"]) == ("False", "Moving")

    asked = verifying(annotations={names.ANNOTATION_RESIZE: "revert"})
    asked = asked.model_copy(
        update={"status": asked.status.model_copy(update={"conditions": start_ready(ready)})}
    )
    revert = lc.decide(obs(asked, migration=m.mig("finished")))
    assert revert.migration_phase is not None
    reverting = next(c for c in revert.status["conditions"] if c["type"] == "Ready")  # type: ignore[index]
    assert (reverting["status"], reverting["reason"]) == ("False", "Reverting")


def test_a_resize_that_waited_for_a_host_is_not_failing_once_its_migration_runs() -> None:
    """Whatever a NoValidHost decided on an older view raced with, the condition ends False
    while the migration is in flight (found in CI: VERIFY_RESIZE with ResizeFailed=True)."""
    waited = {
        "type": "ResizeFailed",
        "status": "True",
        "reason": "NoValidHost",
        "message": "no valid host among 1 hypervisors",
        "lastTransitionTime": m.T0.isoformat(),
    }
    resizing = m.inst(flavor="m1.small", status=m.active(phase="RESIZE", conditions=[waited]))
    p = lc.decide(obs(resizing, migration=m.mig("pre-migrating", dest="node-b")))
    cond = next(c for c in p.status["conditions"] if c["type"] == "ResizeFailed")  # type: ignore[index]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False",
        "Scheduled",
        "scheduled to node-b",
    )


def _missing(*, flavor: str = "m1.tiny", ready: dict[str, str] | None = None) -> Any:
    report = {**m.host(power="Stopped", at=at(30)), "node": "node-a", "missing": True}
    status = m.active(host=report, conditions=[ready or _ready_since(m.T0)])
    return m.inst(status=status, labels={names.LABEL_NODE: "node-a"}, flavor=flavor)


def test_a_guest_deleted_outside_kubenova_is_reported_not_taken_for_stopped() -> None:
    """kubectl delete vm, virsh undefine: the node kept the disk and says the guest is
    missing. The instance says so (Ready=False, GuestMissing, and a Warning) and stays
    as the user wanted it: not stopped, no resize started on a guest that is not there."""
    p = lc.decide(obs(_missing(flavor="m1.small")))
    assert p.main is None  # spec.powerState untouched: not "stopped by itself"
    assert p.status is not None
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", names.GUEST_MISSING)
    assert "its disk is kept" in ready["message"]
    assert reasons(p) == [names.GUEST_MISSING]
    assert p.need_placement is None
    assert "migrationRef" not in p.status or p.status["migrationRef"] is None


def test_the_guest_missing_warning_is_posted_once() -> None:
    first = lc.decide(obs(_missing()))
    again = lc.decide(obs(applied(_missing(), first)))
    assert reasons(again) == []
    assert not again.writes


def test_a_guest_defined_again_makes_the_instance_ready() -> None:
    said = {"type": "Ready", "status": "False", "reason": names.GUEST_MISSING,
            "message": "x", "lastTransitionTime": m.T0.isoformat()}  # fmt: skip
    back = {**m.host(at=at(60)), "node": "node-a"}
    i = m.inst(status=m.active(host=back, conditions=[said]), labels={names.LABEL_NODE: "node-a"})
    p = lc.decide(obs(i))
    assert p.status is not None
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Running")
    assert reasons(p) == ["GuestRedefined"]
