"""--wait judges done / failed / waiting from the objects alone."""

from __future__ import annotations

from typing import Any

from kubenova.plugin import wait


def inst(phase: str, task: str | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "vm", "annotations": status.pop("annotations", {})},
        "status": {"phase": phase, "taskState": task, **status},
    }


def mig(name: str, phase: str, message: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-27T10:00:00Z"},
        "status": {"phase": phase, "message": message},
    }


RESIZE = wait.Request(name="vm", before={"vm-old"}, generation=3)


def test_an_older_migration_is_not_the_answer() -> None:
    state = wait.verify_state(
        RESIZE, inst("VERIFY_RESIZE", migrationRef="vm-old"), [mig("vm-old", "finished")]
    )
    assert not state.done
    assert not state.failed


def test_done_when_the_new_migration_lands_in_verify_resize() -> None:
    body = inst("VERIFY_RESIZE", migrationRef="vm-new", node="b", flavor={"name": "m1.small"})
    state = wait.verify_state(RESIZE, body, [mig("vm-old", "confirmed"), mig("vm-new", "finished")])
    assert state.done
    assert state.text.startswith("VERIFY_RESIZE: m1.small on b")


def test_a_failed_migration_fails_the_wait_with_its_message() -> None:
    state = wait.verify_state(
        RESIZE, inst("RESIZE", "resize_finish"), [mig("vm-new", "error", "disk full")]
    )
    assert state.failed
    assert "disk full" in state.text


def test_no_valid_host_for_this_generation_fails_with_how_to_cancel() -> None:
    failed = {
        "type": "ResizeFailed",
        "status": "True",
        "reason": "NoValidHost",
        "message": "no valid host among 2 hypervisors",
        "observedGeneration": 3,
    }
    body = inst("ACTIVE", conditions=[failed], flavor={"name": "m1.tiny"})
    state = wait.verify_state(RESIZE, body, [])
    assert state.failed
    assert "NoValidHost: no valid host among 2 hypervisors" in state.text
    assert '{"spec":{"flavor":"m1.tiny"}}' in state.text
    stale = wait.Request(name="vm", before=set(), generation=4)
    assert not wait.verify_state(stale, body, []).failed


def test_migrate_fails_once_the_annotation_is_dropped_with_a_condition() -> None:
    request = wait.Request(name="vm", before=set(), migrate=True)
    failed = {"type": "MigrateFailed", "status": "True", "message": "no valid host"}
    pending = inst("ACTIVE", conditions=[failed], annotations={"compute.kubenova.io/migrate": ""})
    assert not wait.verify_state(request, pending, []).failed  # not acted on yet
    assert wait.verify_state(request, inst("ACTIVE", conditions=[failed]), []).failed


def test_finish_waits_for_the_instance_to_settle() -> None:
    confirmed = mig("vm-new", "confirmed")
    busy = inst("VERIFY_RESIZE", "resize_confirming", migrationRef="vm-new")
    assert not wait.finish_state(busy, confirmed).done
    settled = inst("ACTIVE", node="b", flavor={"name": "m1.small"})
    assert wait.finish_state(settled, confirmed).text == "ACTIVE: m1.small on b (confirmed)"
