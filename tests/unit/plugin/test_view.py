"""What kubectl nova prints: tables, rows and advice."""

from __future__ import annotations

import pytest

from kubenova.plugin import kubectl, view


def test_table_aligns_columns_three_spaces_apart() -> None:
    text = view.table(("NAME", "STATUS"), [["a", "ACTIVE"], ["longer-name", "-"]])
    assert text.splitlines() == [
        "NAME          STATUS",
        "a             ACTIVE",
        "longer-name   -",
    ]


def test_instance_row_shows_missing_fields_as_a_dash() -> None:
    body = {"metadata": {"name": "vm", "namespace": "ns"}, "spec": {"flavor": "m1.tiny"}}
    assert view.rows([body], view.INSTANCE_COLUMNS) == (
        ["NAME", "FLAVOR", "STATUS", "TASK", "NODE", "POWER"],
        [["vm", "m1.tiny", "-", "-", "-", "-"]],
    )
    headers, [cells] = view.rows([body], view.INSTANCE_COLUMNS, namespace=True)
    assert (headers[0], cells[0]) == ("NAMESPACE", "ns")


def test_migration_row_times_to_the_second_in_utc() -> None:
    body = {
        "metadata": {
            "name": "vm-x1",
            "namespace": "ns",
            "creationTimestamp": "2026-11-27T10:00:00Z",
        },
        "spec": {
            "instanceName": "vm",
            "type": "resize",
            "sourceNode": "a",
            "destNode": "b",
            "oldFlavor": {"name": "m1.tiny"},
            "newFlavor": {"name": "m1.small"},
        },
        "status": {
            "phase": "finished",
            "phaseTransitions": [{"phase": "finished", "time": "2026-11-27T11:00:01.5+01:00"}],
        },
    }
    assert view.rows([body], view.MIGRATION_COLUMNS)[1][0] == [
        "vm-x1",
        "vm",
        "resize",
        "a",
        "b",
        "m1.tiny",
        "m1.small",
        "finished",
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:00:01Z",
    ]


@pytest.mark.parametrize(
    ("phase", "task", "says"),
    [
        ("ACTIVE", None, "there is no resize to confirm"),
        (
            "RESIZE",
            "resize_migrating",
            "(resize_migrating), not VERIFY_RESIZE: the resize is still",
        ),
        ("VERIFY_RESIZE", "resize_reverting", "a resize_reverting is already under way"),
        ("REVERT_RESIZE", "resize_reverting", "it is being reverted"),
        ("ERROR", None, "kubectl describe instance vm"),
        (None, None, "instance vm is not built yet, not VERIFY_RESIZE"),
    ],
)
def test_confirm_outside_verify_resize_names_the_phase_and_what_to_do(
    phase: str | None, task: str | None, says: str
) -> None:
    assert says in view.not_verifying("vm", phase, task, "confirm")


@pytest.mark.parametrize(
    ("phase", "task", "movable"),
    [
        ("ACTIVE", None, True),
        ("SHUTOFF", None, True),
        ("ACTIVE", "powering_off", False),
        ("VERIFY_RESIZE", None, False),
        ("BUILD", "spawning", False),
    ],
)
def test_only_a_settled_instance_can_move(phase: str, task: str | None, movable: bool) -> None:
    assert (view.cannot_move("vm", phase, task) is None) is movable


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (
            'Error from server (NotFound): instances.compute.kubenova.io "x" not found\n',
            'instances.compute.kubenova.io "x" not found',
        ),
        (
            "error: Error from server (Forbidden): admission webhook denied: flavor m9 gone",
            "admission webhook denied: flavor m9 gone",
        ),
        ("error: context was not found for specified context: nope", "context was not found"),
        ("", "kubectl failed"),
    ],
)
def test_kubectl_prefixes_give_way_to_the_server_message(stderr: str, message: str) -> None:
    assert kubectl.server_message(stderr).startswith(message)
