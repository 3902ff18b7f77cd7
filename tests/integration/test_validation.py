"""The API server itself refuses bad manifests and illegal edits, with a message that says why.

Each case sets objects up the way the controller and agents would (status through the
status subresource), then makes one bad request as a user would with kubectl, and checks
the refusal, its message, and that the stored object did not change.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests import builders
from tests.kube import Kubectl, Result

pytestmark = pytest.mark.controlplane

GROUP = "compute.kubenova.io"
Op = Callable[[Kubectl], Result]


def create(manifest: dict[str, Any]) -> Op:
    return lambda k: k.run("create", "-f", "-", stdin=json.dumps(manifest))


def _patch(resource: str, name: str, body: dict[str, Any], *extra: str) -> Op:
    return lambda k: k.run(
        "patch", f"{resource}.{GROUP}", name, "--type=merge", "-p", json.dumps(body), *extra
    )


def patch_spec(resource: str, name: str, **spec: Any) -> Op:
    return _patch(resource, name, {"spec": spec})


def patch_status(resource: str, name: str, **status: Any) -> Op:
    return _patch(resource, name, {"status": status}, "--subresource=status")


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    act: Op
    messages: tuple[str, ...]
    setup: tuple[Op, ...] = ()
    # (resource, name) whose stored state must be unchanged by the refused request.
    target: tuple[str, str] | None = None


def _mig(name: str, *phases: str) -> tuple[Op, ...]:
    return (
        create(builders.migration(name)),
        *(patch_status("migrations", name, phase=p) for p in phases),
    )


CASES = [
    # --- Flavor: bounds and immutability ---------------------------------------------------
    Case(
        "flavor-vcpus-0",
        create(builders.flavor("f-vcpus0", vcpus=0)),
        ("spec.vcpus", "should be greater than or equal to 1"),
    ),
    Case(
        "flavor-memory-16",
        create(builders.flavor("f-mem16", memoryMiB=16)),
        ("spec.memoryMiB", "should be greater than or equal to 64"),
    ),
    Case(
        "flavor-disk-0",
        create(builders.flavor("f-disk0", diskGiB=0)),
        ("spec.diskGiB", "should be greater than or equal to 1"),
    ),
    Case(
        "flavor-vcpus-too-many",
        create(builders.flavor("f-vcpus-big", vcpus=4096)),
        ("spec.vcpus", "should be less than or equal to 1024"),
    ),
    Case(
        "flavor-vcpus-not-a-number",
        create(builders.flavor("f-vcpus-str", vcpus="two")),
        ("spec.vcpus", "must be of type integer"),
    ),
    Case(
        "flavor-memory-missing",
        create({**builders.flavor("f-nomem"), "spec": {"vcpus": 1, "diskGiB": 1}}),
        ("spec.memoryMiB", "Required value"),
    ),
    Case(
        "flavor-spec-missing",
        create({k: v for k, v in builders.flavor("f-nospec").items() if k != "spec"}),
        ("spec", "Required value"),
    ),
    Case(
        "flavor-vcpus-edit",
        patch_spec("flavors", "f-edit", vcpus=2),
        ("spec.vcpus", "vcpus is immutable", "create a new Flavor"),
        setup=(create(builders.flavor("f-edit")),),
        target=("flavors", "f-edit"),
    ),
    Case(
        "flavor-disk-edit",
        patch_spec("flavors", "f-edit-disk", diskGiB=9),
        ("spec.diskGiB", "diskGiB is immutable"),
        setup=(create(builders.flavor("f-edit-disk")),),
        target=("flavors", "f-edit-disk"),
    ),
    # --- Instance: spec -------------------------------------------------------------------
    Case(
        "instance-flavor-missing",
        create({**builders.instance("i-noflavor"), "spec": {"image": "cirros"}}),
        ("spec.flavor", "Required value"),
    ),
    Case(
        "instance-flavor-not-a-name",
        create(builders.instance("i-badname", flavor="M1 Tiny")),
        ("spec.flavor", "should match"),
    ),
    # Paths from the API (issue 10): an image is a name, a uuid is a UUID; nothing joined
    # into a path on a node, or read by a root agent, comes from a user unchecked.
    Case(
        "instance-image-absolute-path",
        create(builders.instance("i-passwd", image="/etc/passwd")),
        ("spec.image", "should match", "A-Za-z0-9"),
    ),
    Case(
        "instance-image-relative-path",
        create(builders.instance("i-dotdot", image="../../etc/kubenova/transfer/key")),
        ("spec.image", "should match"),
    ),
    Case(
        "instance-status-uuid-dotdot",
        patch_status("instances", "i-uuid", uuid=".."),
        ("status.uuid", "should be at least 36 chars long"),
        setup=(create(builders.instance("i-uuid")),),
        target=("instances", "i-uuid"),
    ),
    Case(
        "instance-status-uuid-path",
        patch_status("instances", "i-uuid2", uuid="../" * 11 + "etc"),  # 36 characters
        ("status.uuid", "should match"),
        setup=(create(builders.instance("i-uuid2")),),
        target=("instances", "i-uuid2"),
    ),
    Case(
        "migration-instance-uuid-path",
        create(builders.migration("m-uuid", instanceUuid="/" * 36)),
        ("spec.instanceUuid", "should match"),
    ),
    Case(
        "instance-power-state-paused",
        create(builders.instance("i-paused", powerState="Paused")),
        ("spec.powerState", 'Unsupported value: "Paused"', '"Running", "Stopped"'),
    ),
    Case(
        "instance-shutdown-timeout-negative",
        create(builders.instance("i-timeout", shutdownTimeoutSeconds=-1)),
        ("spec.shutdownTimeoutSeconds", "greater than or equal to 0"),
    ),
    Case(
        "instance-image-edit",
        patch_spec("instances", "i-image", image="ubuntu"),
        ("spec.image", "image is immutable"),
        setup=(create(builders.instance("i-image")),),
        target=("instances", "i-image"),
    ),
    Case(
        "instance-flavor-edit-in-verify-resize",
        patch_spec("instances", "i-verify", flavor="m1.medium"),
        (
            "spec.flavor",
            "Forbidden",
            "while status.phase is VERIFY_RESIZE",
            "confirm or revert the pending resize first",
        ),
        setup=(
            create(builders.instance("i-verify")),
            patch_status("instances", "i-verify", phase="VERIFY_RESIZE", node="node-a"),
        ),
        target=("instances", "i-verify"),
    ),
    Case(
        "instance-flavor-edit-in-resize",
        patch_spec("instances", "i-resize", flavor="m1.medium"),
        ("spec.flavor", "while status.phase is RESIZE"),
        setup=(
            create(builders.instance("i-resize")),
            patch_status(
                "instances", "i-resize", phase="RESIZE", taskState="resize_prep", node="node-a"
            ),
        ),
        target=("instances", "i-resize"),
    ),
    Case(
        "instance-flavor-edit-in-error",
        patch_spec("instances", "i-error", flavor="m1.medium"),
        ("while status.phase is ERROR",),
        setup=(
            create(builders.instance("i-error")),
            patch_status("instances", "i-error", phase="ERROR", node="node-a"),
        ),
        target=("instances", "i-error"),
    ),
    # --- Instance: status (as the controller would write it) ------------------------------
    Case(
        "instance-phase-unknown",
        patch_status("instances", "i-phase", phase="Resizing"),
        ("status.phase", 'Unsupported value: "Resizing"', '"VERIFY_RESIZE"'),
        setup=(create(builders.instance("i-phase")),),
        target=("instances", "i-phase"),
    ),
    Case(
        "instance-task-state-unknown",
        patch_status("instances", "i-task", phase="RESIZE", taskState="resizing"),
        ("status.taskState", 'Unsupported value: "resizing"'),
        setup=(create(builders.instance("i-task")),),
        target=("instances", "i-task"),
    ),
    Case(
        "instance-condition-status-maybe",
        patch_status("instances", "i-cond", conditions=[builders.condition(status="Maybe")]),
        ("status.conditions[0].status", 'Unsupported value: "Maybe"'),
        setup=(create(builders.instance("i-cond")),),
        target=("instances", "i-cond"),
    ),
    Case(
        "instance-condition-reason-with-spaces",
        patch_status(
            "instances", "i-reason", conditions=[builders.condition(reason="no valid host")]
        ),
        ("status.conditions[0].reason", "should match"),
        setup=(create(builders.instance("i-reason")),),
        target=("instances", "i-reason"),
    ),
    # --- Migration: the work order and its phase machine -----------------------------------
    Case(
        "migration-type-live",
        create(builders.migration("m-live", type="live")),
        ("spec.type", 'Unsupported value: "live"'),
    ),
    Case(
        "migration-spec-edit",
        patch_spec("migrations", "m-edit", destNode="node-b"),
        ("spec is immutable",),
        setup=_mig("m-edit"),
        target=("migrations", "m-edit"),
    ),
    Case(
        "migration-skips-to-confirmed",
        patch_status("migrations", "m-skip", phase="confirmed"),
        ("illegal migration phase transition from pre-migrating to confirmed",),
        setup=_mig("m-skip", "pre-migrating"),
        target=("migrations", "m-skip"),
    ),
    Case(
        "migration-goes-backwards",
        patch_status("migrations", "m-back", phase="migrating"),
        ("illegal migration phase transition from finished to migrating",),
        setup=_mig("m-back", "pre-migrating", "migrating", "post-migrating", "finished"),
        target=("migrations", "m-back"),
    ),
    Case(
        "migration-revert-after-confirm",
        patch_status("migrations", "m-late", phase="reverting"),
        ("illegal migration phase transition from confirmed to reverting",),
        setup=_mig(
            "m-late",
            "pre-migrating",
            "migrating",
            "post-migrating",
            "finished",
            "confirming",
            "confirmed",
        ),
        target=("migrations", "m-late"),
    ),
    # --- Hypervisor ------------------------------------------------------------------------
    Case(
        "hypervisor-negative-ratio",
        create(builders.hypervisor("hv-ratio", allocationRatios={"cpu": -1})),
        ("spec.allocationRatios.cpu", "greater than or equal to 0"),
    ),
    Case(
        "hypervisor-unknown-driver",
        patch_status(
            "hypervisors",
            "hv-xen",
            agent={
                "driver": "xen",
                "heartbeatTime": "2026-11-27T12:00:00Z",
                "capacity": {"vcpus": 4, "memoryMiB": 4096, "diskGiB": 40},
            },
        ),
        ("status.agent.driver", 'Unsupported value: "xen"'),
        setup=(create(builders.hypervisor("hv-xen")),),
        target=("hypervisors", "hv-xen"),
    ),
]


def _stored(kubectl: Kubectl, target: tuple[str, str]) -> dict[str, Any]:
    obj = kubectl.get_json(f"{target[0]}.{GROUP}", target[1])
    return {
        "spec": obj.get("spec"),
        "status": obj.get("status"),
        "resourceVersion": obj["metadata"]["resourceVersion"],
    }


def test_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_api_server_refuses(kubectl: Kubectl, case: Case) -> None:
    for step in case.setup:
        result = step(kubectl)
        assert result.ok, f"setup of {case.id} failed: {result.stderr}"
    before = _stored(kubectl, case.target) if case.target else None

    result = case.act(kubectl)

    assert not result.ok, f"{case.id} was accepted: {result.stdout}"
    assert "is invalid" in result.stderr, result.stderr
    for message in case.messages:
        assert message in result.stderr, f"{message!r} not in: {result.stderr}"
    if case.target:
        assert _stored(kubectl, case.target) == before


# --- the same rules let legal requests through (so the refusals above are not blanket) -----


def test_flavor_can_be_disabled_and_described(kubectl: Kubectl) -> None:
    assert create(builders.flavor("f-retire"))(kubectl).ok
    result = patch_spec("flavors", "f-retire", disabled=True, description="retired")(kubectl)
    assert result.ok, result.stderr
    assert kubectl.get_json("flavors", "f-retire")["spec"]["disabled"] is True


def test_flavor_edit_allowed_before_status_and_when_active_or_shutoff(kubectl: Kubectl) -> None:
    assert create(builders.instance("i-ok"))(kubectl).ok
    assert patch_spec("instances", "i-ok", flavor="m1.small")(kubectl).ok  # no status yet
    for phase, flavor in (("ACTIVE", "m1.medium"), ("SHUTOFF", "m1.large")):
        assert patch_status("instances", "i-ok", phase=phase)(kubectl).ok
        result = patch_spec("instances", "i-ok", flavor=flavor)(kubectl)
        assert result.ok, result.stderr
    assert kubectl.get_json("instances", "i-ok")["spec"]["flavor"] == "m1.large"


def test_setting_flavor_back_to_previous_is_allowed_in_verify_resize(kubectl: Kubectl) -> None:
    assert create(builders.instance("i-back", flavor="m1.small"))(kubectl).ok
    status = {"phase": "VERIFY_RESIZE", "node": "node-a", "previousFlavor": builders.snapshot()}
    assert patch_status("instances", "i-back", **status)(kubectl).ok
    assert not patch_spec("instances", "i-back", flavor="m1.large")(kubectl).ok
    result = patch_spec("instances", "i-back", flavor="m1.tiny")(kubectl)  # = previousFlavor
    assert result.ok, result.stderr


def test_flavor_edit_allowed_before_the_first_placement(kubectl: Kubectl) -> None:
    assert create(builders.instance("i-unplaced"))(kubectl).ok
    assert patch_status("instances", "i-unplaced", phase="BUILD", taskState="scheduling")(
        kubectl
    ).ok
    assert patch_spec("instances", "i-unplaced", flavor="m1.small")(kubectl).ok


def test_instance_defaults_power_state_running(kubectl: Kubectl) -> None:
    assert create(builders.instance("i-default"))(kubectl).ok
    assert kubectl.get_json("instances", "i-default")["spec"]["powerState"] == "Running"


@pytest.mark.parametrize(
    "phases",
    [
        ["pre-migrating", "migrating", "post-migrating", "finished", "confirming", "confirmed"],
        ["pre-migrating", "migrating", "post-migrating", "finished", "reverting", "reverted"],
        ["pre-migrating", "migrating", "error"],
    ],
    ids=["confirm", "revert", "error"],
)
def test_legal_migration_phase_sequences(kubectl: Kubectl, phases: list[str]) -> None:
    name = f"m-legal-{phases[-1]}"
    for step in _mig(name, *phases):
        result = step(kubectl)
        assert result.ok, result.stderr
    assert kubectl.get_json("migrations", name)["status"]["phase"] == phases[-1]
