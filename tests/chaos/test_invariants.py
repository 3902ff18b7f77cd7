"""The invariant checker on hand-built objects: it must see each breach it exists for (a
checker that cannot fail is worthless) and stay quiet on the states a healthy resize
passes through."""

from __future__ import annotations

from typing import Any

import pytest

from tests import builders
from tests.chaos import invariants, views
from tests.chaos.views import Amount

TINY = builders.snapshot("m1.tiny", 1, 512, 1)
SMALL = builders.snapshot("m1.small", 1, 2048, 20)
MEDIUM = builders.snapshot("m1.medium", 2, 4096, 40)
CAPACITY = {"vcpus": 2, "memoryMiB": 4096, "diskGiB": 50}  # limit: 8 vCPUs, 4096 MiB, 50 GiB


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def inst(
    name: str,
    n: int,
    *,
    node: str = "node-a",
    flavor: dict[str, Any] | None = TINY,
    phase: str = "ACTIVE",
    task: str = "",
    spec_flavor: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    body = builders.instance(name, flavor=spec_flavor or (flavor or {})["name"])
    body["metadata"].update(uid=uid(n), **meta)
    body["status"] = {
        "phase": phase,
        "taskState": task,
        "node": node,
        "uuid": uid(n),
        "conditions": conditions or [],
        **({"flavor": flavor} if flavor else {}),
    }
    return body


def mig(
    name: str,
    owner: int,
    *,
    phase: str = "finished",
    source: str = "node-a",
    dest: str = "node-b",
    old: dict[str, Any] = TINY,
    new: dict[str, Any] = SMALL,
    n: int = 100,
    **status: Any,
) -> dict[str, Any]:
    body = builders.migration(
        name,
        instanceName=f"vm{owner}",
        instanceUuid=uid(owner),
        sourceNode=source,
        destNode=dest,
        oldFlavor=old,
        newFlavor=new,
    )
    body["metadata"].update(
        uid=uid(n),
        creationTimestamp=f"2026-12-01T00:00:{n % 60:02d}Z",
        ownerReferences=[{"kind": "Instance", "name": f"vm{owner}", "uid": uid(owner)}],
    )
    body["status"] = {"phase": phase, **status}
    return body


def hv(name: str, usage: dict[str, int] | None = None, **spec: Any) -> dict[str, Any]:
    body = builders.hypervisor(name, **spec)
    body["status"] = {
        "agent": {"driver": "fake", "capacity": CAPACITY, "heartbeatTime": "2026-12-01T00:00:00Z"},
        "state": "up",
        **({"usage": usage} if usage is not None else {}),
    }
    return body


def guest(
    flavor: dict[str, Any] | None = TINY,
    *,
    power: str = "Running",
    resize: dict[str, Any] | None = None,
    aside_for: str = "",
    received_for: str = "",
) -> dict[str, Any]:
    def disk(f: dict[str, Any] | None) -> dict[str, Any] | None:
        if f is None:
            return None
        return {
            "vcpus": f["vcpus"],
            "memory_mib": f["memoryMiB"],
            "disk_gib": f["diskGiB"],
            "image": "cirros",
        }

    return {
        "current": disk(flavor),
        "power": power,
        "resize": disk(resize),
        "aside_for": aside_for,
        "received_for": received_for,
        "owner": "default/vm",
    }


def snap(*items: dict[str, Any], guests: dict[str, dict[str, Any]] | None = None) -> views.Snapshot:
    nodes = [hv("node-a"), hv("node-b")]
    named = {i["metadata"]["name"] for i in items if i["kind"] == "Hypervisor"}
    return views.Snapshot.of(
        [*items, *(h for h in nodes if h["metadata"]["name"] not in named)], guests
    )


# --- 1. overcommit -----------------------------------------------------------------------


def test_claims_beyond_the_limit_are_an_overcommit() -> None:
    found = invariants.overcommitted(
        snap(inst("vm1", 1, flavor=MEDIUM), inst("vm2", 2, flavor=SMALL))
    )
    assert found == [
        "overcommit: node-a claims Amount(vcpus=3, memory_mib=6144, disk_gib=60), "
        "limit Amount(vcpus=8, memory_mib=4096, disk_gib=50)"
    ]


def test_a_cross_node_resize_claims_old_on_the_source_and_new_on_the_dest() -> None:
    s = snap(inst("vm1", 1, phase="VERIFY_RESIZE", node="node-b", flavor=SMALL), mig("m", 1))
    assert invariants.claims(s) == {
        "node-a": (Amount(1, 512, 1), 1),
        "node-b": (Amount(1, 2048, 20), 1),
    }


def test_a_same_host_resize_claims_the_maximum_not_the_sum() -> None:
    s = snap(
        inst("vm1", 1, flavor=SMALL),
        mig("m", 1, dest="node-a", old=SMALL, new=builders.snapshot("m1.big", 4, 4096, 10)),
    )
    # The sum (5 vCPUs, 6144 MiB, 30 GiB) would not fit; the maximum does.
    assert invariants.claims(s) == {"node-a": (Amount(4, 4096, 20), 1)}
    assert invariants.overcommitted(s) == []


def test_a_final_migration_claims_nothing_the_instance_does() -> None:
    s = snap(inst("vm1", 1, node="node-b", flavor=SMALL), mig("m", 1, phase="confirmed"))
    assert invariants.claims(s) == {"node-b": (Amount(1, 2048, 20), 1)}


def test_allocation_ratios_raise_the_limit() -> None:
    roomy = hv("node-a", allocationRatios={"memory": 2.0, "disk": 1.5})
    found = invariants.overcommitted(
        snap(roomy, inst("vm1", 1, flavor=MEDIUM), inst("vm2", 2, flavor=SMALL))
    )
    assert found == []


def test_what_the_fake_hypervisor_holds_beyond_the_limit_is_an_overcommit() -> None:
    # The API claims only vm1, but node-a holds a second, large guest nobody accounted for.
    s = snap(
        inst("vm1", 1, flavor=MEDIUM),
        inst("vm2", 2, node="node-b"),
        guests={"node-a": {uid(1): guest(MEDIUM), uid(2): guest(SMALL, power="Stopped")}},
    )
    [found] = invariants.overcommitted(s)
    assert found.startswith("overcommit: node-a's hypervisor holds Amount(vcpus=3, memory_mib=6144")


def test_a_guest_held_where_its_instance_claims_nothing_is_unclaimed() -> None:
    # The original runs on node-a while the Instance says node-b and names no migration
    # that would put it back: node-a's guest is unaccounted.
    lagging = inst("vm1", 1, phase="ACTIVE", node="node-b", flavor=SMALL)
    s = snap(lagging, guests={"node-a": {uid(1): guest(TINY)}})
    assert invariants.unclaimed_guests(s) == [
        f"unclaimed guest: {uid(1)} on node-a (running), its instance claims ['node-b'] "
        "(default/vm1 ACTIVE)"
    ]


def test_a_reverted_migration_the_instance_still_names_claims_the_source() -> None:
    # A revert is over on the nodes (the original runs on node-a again) while the Instance
    # still says node-b: the Migration it names puts the claim on the source.
    lagging = inst("vm1", 1, phase="REVERT_RESIZE", node="node-b", flavor=SMALL)
    lagging["status"]["migrationRef"] = "m"
    s = snap(lagging, mig("m", 1, phase="reverted"), guests={"node-a": {uid(1): guest(TINY)}})
    assert invariants.unclaimed_guests(s) == []
    assert invariants.unowned_artefacts(s) == []


# --- 1. overcommit: claims as of one revision --------------------------------------------

PLURALS = ("instances", "migrations", "hypervisors", "flavors")
KINDS = dict(zip(PLURALS, ("Instance", "Migration", "Hypervisor", "Flavor"), strict=True))


class History:
    """A fake API server's objects, one list per etcd revision: a list at an exact revision
    is answered from it, any other at the newest; each list lets the next revision land
    (the controller writes while the checker reads)."""

    def __init__(self, *revisions: list[dict[str, Any]]) -> None:
        self.revisions = revisions
        self.newest = 0
        self.compacted: set[str] = set()  # revisions that answer 410 once

    def list_at(self, plural: str, revision: str | None) -> dict[str, Any]:
        at = self.newest if revision is None else int(revision)
        self.newest = min(self.newest + 1, len(self.revisions) - 1)
        if revision in self.compacted:
            self.compacted.discard(revision)
            raise invariants.AgainError(f"revision {revision} compacted")
        items = [b for b in self.revisions[at] if b["kind"] == KINDS[plural]]
        return {
            "kind": f"{KINDS[plural]}List",
            "metadata": {"resourceVersion": str(at)},
            "items": items,
        }

    def kind_by_kind(self) -> list[dict[str, Any]]:
        """What `kubectl get instances,migrations,...` read: each kind at its own revision."""
        return [item for p in PLURALS for item in self.list_at(p, None)["items"]]


NODES = [hv("node-a"), hv("node-b")]
LARGE_ON_A = (
    "overcommit: node-a claims Amount(vcpus=4, memory_mib=8192, disk_gib=80), "
    "limit Amount(vcpus=8, memory_mib=4096, disk_gib=50)"
)
# vm1 holds node-a's memory and is being deleted; vm2 waits on node-b for room to resize.
LEAVING = inst("vm1", 1, flavor=MEDIUM, phase="DELETING", deletionTimestamp="2026-12-01T00:00:00Z")
WAITING = inst("vm2", 2, node="node-b", flavor=SMALL, spec_flavor="m1.medium")
# vm2's resize onto node-a, claimed once vm1 is gone (or, a real double booking, while not).
RESIZING = inst("vm2", 2, node="node-b", flavor=SMALL, spec_flavor="m1.medium", phase="RESIZE")
ONTO_A = mig(
    "vm2-m", 2, phase="pre-migrating", source="node-b", dest="node-a", old=SMALL, new=MEDIUM
)


@pytest.mark.parametrize(
    ("revisions", "kind_by_kind", "one_revision"),
    [
        # make chaos, seed 1864615412: the Instances listed before vm1's deletion freed
        # node-a, the Migrations after vm2's resize claimed it. No revision holds both.
        ([[LEAVING, WAITING, *NODES], [RESIZING, ONTO_A, *NODES]], [LARGE_ON_A], []),
        # The controller claims node-a while vm1 still holds it: an overcommit either way.
        ([[LEAVING, RESIZING, ONTO_A, *NODES]], [LARGE_ON_A], [LARGE_ON_A]),
    ],
    ids=["deleted-then-claimed", "claimed-while-held"],
)
def test_claims_are_counted_at_one_revision(
    revisions: list[list[dict[str, Any]]], kind_by_kind: list[str], one_revision: list[str]
) -> None:
    old_read = views.Snapshot.of(History(*revisions).kind_by_kind())
    assert invariants.overcommitted(old_read) == kind_by_kind
    new_read = views.Snapshot.of(invariants.read_api(History(*revisions).list_at, PLURALS))
    assert invariants.overcommitted(new_read) == one_revision


def test_a_read_at_a_compacted_revision_starts_again_at_a_newer_one() -> None:
    api = History([LEAVING, WAITING, *NODES], [RESIZING, ONTO_A, *NODES])
    api.compacted = {"0"}
    found = invariants.read_api(api.list_at, ("instances", "migrations"))
    # The second try lists Instances at revision 1, and the Migrations with them.
    assert [b["metadata"]["name"] for b in found] == ["vm2", "vm2-m"]


# --- 2. usage ----------------------------------------------------------------------------


def test_usage_must_equal_the_claims() -> None:
    right = {"vcpus": 1, "memoryMiB": 512, "diskGiB": 1, "instances": 1}
    wrong = {**right, "memoryMiB": 2560}
    zero = {"vcpus": 0, "memoryMiB": 0, "diskGiB": 0, "instances": 0}
    assert (
        invariants.usage_mismatches(snap(hv("node-a", right), hv("node-b", zero), inst("vm1", 1)))
        == []
    )
    [found] = invariants.usage_mismatches(
        snap(hv("node-a", wrong), hv("node-b", zero), inst("vm1", 1))
    )
    assert found.startswith("usage: node-a reports (Amount(vcpus=1, memory_mib=2560")


def test_usage_is_checked_only_when_settled() -> None:
    s = snap(
        hv("node-a", {"vcpus": 0, "memoryMiB": 0, "diskGiB": 0, "instances": 0}), inst("vm1", 1)
    )
    assert invariants.violations(s) == []
    assert invariants.violations(s, settled=True) != []


# --- 3. one active migration -------------------------------------------------------------


def test_two_active_migrations_of_one_instance_are_a_violation() -> None:
    s = snap(
        inst("vm1", 1, phase="RESIZE", task="resize_migrating"),
        mig("vm1-a-1", 1, phase="migrating", n=101),
        mig("vm1-a-2", 1, phase="pre-migrating", n=102),
    )
    assert invariants.double_migrations(s) == [
        f"two active migrations for instance uid {uid(1)}: ['default/vm1-a-1', 'default/vm1-a-2']"
    ]


def test_history_does_not_count_as_active() -> None:
    s = snap(
        inst("vm1", 1),
        mig("vm1-a-1", 1, phase="confirmed", n=101),
        mig("vm1-a-2", 1, phase="reverted", n=102),
        mig("vm1-a-3", 1, phase="pre-migrating", n=103),
    )
    assert invariants.double_migrations(s) == []


# --- 4. one running guest ----------------------------------------------------------------


def test_a_guest_running_on_two_nodes_is_a_violation() -> None:
    s = snap(
        inst("vm1", 1, phase="VERIFY_RESIZE", node="node-b", flavor=SMALL),
        mig("m", 1),
        guests={"node-a": {uid(1): guest(TINY)}, "node-b": {uid(1): guest(SMALL)}},
    )
    assert invariants.double_guests(s) == [f"guest {uid(1)} runs on 2 nodes: ['node-a', 'node-b']"]


def test_a_stopped_source_beside_the_running_destination_is_fine() -> None:
    s = snap(
        inst("vm1", 1, phase="VERIFY_RESIZE", node="node-b", flavor=SMALL),
        mig("m", 1),
        guests={
            "node-a": {uid(1): guest(TINY, power="Stopped")},
            "node-b": {uid(1): guest(SMALL, received_for=uid(100))},
        },
    )
    assert invariants.violations(s) == []


# --- 5. artefacts are owned --------------------------------------------------------------


def test_a_revert_point_without_a_live_migration_is_an_orphan() -> None:
    s = snap(
        inst("vm1", 1, flavor=SMALL),
        mig("m", 1, phase="confirmed", dest="node-a"),
        guests={"node-a": {uid(1): guest(SMALL, resize=TINY, aside_for=uid(100))}},
    )
    assert invariants.unowned_artefacts(s) == [
        f"orphan revert point: {uid(1)} on node-a (set aside for '{uid(100)}')"
    ]


def test_a_revert_point_of_a_live_same_host_resize_is_owned() -> None:
    s = snap(
        inst("vm1", 1, phase="VERIFY_RESIZE", flavor=SMALL),
        mig("m", 1, phase="finished", dest="node-a"),
        guests={"node-a": {uid(1): guest(SMALL, resize=TINY, aside_for=uid(100))}},
    )
    assert invariants.violations(s) == []


def test_a_revert_point_owned_in_the_later_read_is_owned() -> None:
    # Set aside between the two reads of the API: the first missed its Migration.
    later = [mig("m", 1, phase="pre-migrating", dest="node-a")]
    s = views.Snapshot.of(
        [inst("vm1", 1), hv("node-a")],
        {"node-a": {uid(1): guest(None, resize=TINY, aside_for=uid(100))}},
        later,
    )
    assert invariants.unowned_artefacts(s) == []


def test_a_received_copy_left_after_a_revert_is_an_orphan() -> None:
    s = snap(
        inst("vm1", 1),
        mig("m", 1, phase="reverted"),
        guests={
            "node-a": {uid(1): guest(TINY)},
            "node-b": {uid(1): guest(SMALL, power="Stopped", received_for=uid(100))},
        },
    )
    [found] = invariants.unowned_artefacts(s)
    assert found.startswith(f"orphan received copy: {uid(1)} on node-b")


def test_a_source_left_behind_by_a_confirm_without_it_is_owned_until_it_cleans_up() -> None:
    left = mig("m", 1, phase="confirmed", sourceDownSince="2026-12-01T00:00:00Z")
    s = snap(
        inst("vm1", 1, node="node-b", flavor=SMALL),
        left,
        guests={"node-a": {uid(1): guest(TINY, power="Stopped")}},
    )
    assert invariants.unowned_artefacts(s) == []
    left["status"]["sourceCleaned"] = True
    assert (
        invariants.unowned_artefacts(
            snap(
                inst("vm1", 1, node="node-b", flavor=SMALL),
                left,
                guests={"node-a": {uid(1): guest(TINY, power="Stopped")}},
            )
        )
        != []
    )


def test_a_guest_of_a_deleted_instance_waits_for_the_sweep() -> None:
    s = snap(guests={"node-a": {uid(9): guest(TINY)}})
    assert invariants.violations(s) == []
    assert invariants.unsteady(s) == [f"guest {uid(9)} on node-a belongs to no instance"]


# --- 6. convergence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (inst("vm1", 1), ""),
        (inst("vm1", 1, phase="SHUTOFF"), ""),
        (inst("vm1", 1, phase="VERIFY_RESIZE"), ""),
        (inst("vm1", 1, phase="RESIZE", task="resize_migrating"), "RESIZE/resize_migrating"),
        (inst("vm1", 1, task="powering_on"), "ACTIVE/powering_on"),
        (inst("vm1", 1, phase="ERROR"), "ERROR without a reason"),
        (
            inst(
                "vm1",
                1,
                phase="ERROR",
                conditions=[builders.condition(type="ResizeFailed", reason="MigrationFailed")],
            ),
            "",
        ),
        (inst("vm1", 1, spec_flavor="m1.small"), "spec.flavor m1.small not applied (runs m1.tiny)"),
        (
            inst(
                "vm1",
                1,
                spec_flavor="m1.xlarge",
                conditions=[builders.condition(type="ResizeFailed", reason="NoValidHost")],
            ),
            "",
        ),
        (
            inst(
                "vm1",
                1,
                annotations={"compute.kubenova.io/resize": "confirm"},
                phase="VERIFY_RESIZE",
            ),
            "action ('compute.kubenova.io/resize',) not acted on",
        ),
        (inst("vm1", 1, deletionTimestamp="2026-12-01T00:00:00Z"), "still deleting"),
    ],
    ids=[
        "active",
        "shutoff",
        "verify",
        "resizing",
        "powering-on",
        "error-unexplained",
        "error-explained",
        "flavor-unapplied",
        "waiting-for-a-host",
        "confirm-pending",
        "deleting",
    ],
)
def test_steady_states(body: dict[str, Any], why: str) -> None:
    found = invariants.unsteady(snap(body))
    assert found == ([f"default/vm1: {why}"] if why else [])


def test_a_build_waiting_for_a_host_is_steady_only_while_none_has_room() -> None:
    waiting = inst(
        "vm2",
        2,
        node="",
        phase="BUILD",
        task="scheduling",
        flavor=None,
        spec_flavor="m1.small",
        conditions=[builders.condition(type="Scheduled", status="False", reason="NoValidHost")],
    )
    flavor = builders.flavor("m1.small", vcpus=1, memoryMiB=2048, diskGiB=20)
    full = [
        hv("node-a"),
        hv("node-b"),
        inst("big-a", 3, flavor=MEDIUM),
        inst("big-b", 4, node="node-b", flavor=MEDIUM),
    ]
    assert invariants.unsteady(views.Snapshot.of([*full, waiting, flavor])) == []
    roomy = [hv("node-a"), hv("node-b"), inst("big-a", 3, flavor=MEDIUM)]
    assert invariants.unsteady(views.Snapshot.of([*roomy, waiting, flavor])) == [
        "default/vm2: waits for a host although node-b has room"
    ]
