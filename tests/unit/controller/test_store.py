"""The controller's store, fed by the informers: usage kept incrementally equals a full
recompute, over any order of watch events, missed events and relists (with deletions)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kubenova.controller import store as store_mod
from kubenova.kube import informer, objects
from kubenova.scheduling import scheduler
from kubenova.scheduling.amounts import ZERO, Amount
from tests import builders

NODES = ["n0", "n1", "n2"]
FLAVORS = [builders.snapshot("a", 1, 512, 1), builders.snapshot("b", 2, 2048, 20)]


@dataclasses.dataclass
class Server:
    """What the API server holds, with etcd-like revisions."""

    revision: int = 0
    items: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)

    def write(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        body = copy.deepcopy(body)  # what a client holds never changes under it
        body["metadata"]["resourceVersion"] = str(self.revision)
        self.items[(kind, objects.key(body))] = body
        return {"type": "MODIFIED", "raw_object": body}

    def delete(self, kind: str, key: str) -> dict[str, Any] | None:
        body = self.items.pop((kind, key), None)
        if body is None:
            return None
        self.revision += 1
        return {"type": "DELETED", "raw_object": {**body, "metadata": {**body["metadata"]}}}

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [b for (k, _), b in self.items.items() if k == kind]


class Listed:
    def __init__(self, server: Server, kind: str) -> None:
        self.server, self.kind = server, kind

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        return copy.deepcopy(self.server.of(self.kind)), str(self.server.revision)

    @contextlib.asynccontextmanager
    async def watch(self, version: str, timeout: int) -> AsyncIterator[AsyncIterator[Any]]:
        raise AssertionError("the test drives events itself")
        yield  # pragma: no cover


def instance(i: int, node: str, flavor: int) -> dict[str, Any]:
    body = builders.instance(f"i{i}")
    body["metadata"]["uid"] = f"uid-{i}"
    body["status"] = {"node": node, "flavor": FLAVORS[flavor], "phase": "ACTIVE"}
    return body


def migration(i: int, n: int, *, source: str, dest: str, old: int, new: int) -> dict[str, Any]:
    body = builders.migration(
        f"i{i}-m{n}",
        instanceName=f"i{i}",
        sourceNode=source,
        destNode=dest,
        oldFlavor=FLAVORS[old],
        newFlavor=FLAVORS[new],
    )
    body["metadata"]["ownerReferences"] = [{"kind": "Instance", "uid": f"uid-{i}"}]
    body["status"] = {"phase": "migrating"}
    return body


def usage(store: store_mod.Store) -> dict[str, tuple[Any, int]]:
    return {
        n: (store.used.get(n, ZERO), store.counts.get(n, 0))
        for n in NODES
        if store.used.get(n, ZERO) != ZERO or store.counts.get(n, 0)
    }


def recomputed(bodies: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[Any, int]]:
    fresh = store_mod.Store()
    for kind in ("Migration", "Instance"):
        for body in bodies[kind]:
            fresh.put(kind, body)
    return usage(fresh)


# An operation on the server: (verb, instance, a, b); each is delivered or missed.
ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "delete", "migrate", "finish", "drop-migration", "relist"]),
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(0, 1),
        st.booleans(),  # delivered as a watch event (else missed: a watch gap)
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_incremental_usage_equals_a_full_recompute(steps: list[tuple[Any, ...]]) -> None:
    server = Server()
    store = store_mod.Store()
    infs = {
        kind: informer.Informer(
            None,
            getattr(objects, kind.upper()),
            "",
            lambda k, b, kind=kind: store.remove(kind, k) if b is None else store.put(kind, b),
            source=Listed(server, kind),
        )
        for kind in ("Instance", "Migration")
    }
    for counter, (verb, i, a, b, delivered) in enumerate(steps):
        event: tuple[str, dict[str, Any] | None] | None = None
        inst = server.items.get(("Instance", f"default/i{i}"))
        if verb == "relist":
            for inf in infs.values():
                asyncio.run(inf.resync())
        elif verb == "create" and inst is None:
            event = ("Instance", server.write("Instance", instance(i, NODES[a], b)))
        elif verb == "delete" and inst is not None:
            event = ("Instance", server.delete("Instance", f"default/i{i}"))
        elif verb == "migrate" and inst is not None:
            flavor = FLAVORS.index(inst["status"]["flavor"])
            mig = migration(
                i, counter, source=inst["status"]["node"], dest=NODES[a], old=flavor, new=b
            )
            event = ("Migration", server.write("Migration", mig))
        elif verb in ("finish", "drop-migration"):
            mine = [m for m in server.of("Migration") if m["spec"]["instanceName"] == f"i{i}"]
            if mine and verb == "finish":
                done = {**mine[0], "status": {"phase": "confirmed"}}
                event = ("Migration", server.write("Migration", done))
            elif mine:
                event = ("Migration", server.delete("Migration", objects.key(mine[0])))
        if event is not None and event[1] is not None and delivered:
            infs[event[0]]._handle(event[1])
        held = {k: list(store.objects[k].values()) for k in ("Instance", "Migration")}
        assert usage(store) == recomputed(held), "incremental usage drifted from the objects"
    for inf in infs.values():
        asyncio.run(inf.resync())
    truth = {k: server.of(k) for k in ("Instance", "Migration")}
    assert {k: sorted(store.objects[k]) for k in truth} == {
        k: sorted(objects.key(b) for b in v) for k, v in truth.items()
    }, "after a relist the store holds exactly what the server does"
    assert usage(store) == recomputed(truth)


def report(heartbeat: str) -> dict[str, Any]:
    body = builders.hypervisor("n0")
    body["metadata"]["resourceVersion"] = "1"
    body["status"] = {
        "agent": {
            "driver": "fake",
            "capacity": {"vcpus": 4, "memoryMiB": 4096, "diskGiB": 40},
            "heartbeatTime": heartbeat,
        }
    }
    return body


def test_up_and_down_follow_when_heartbeats_were_seen_not_the_times_they_carry() -> None:
    """An agent whose clock is an hour off is up while it keeps renewing; a silent one goes
    down serviceDownTime after it was last heard, whatever its last report says."""
    now = [1000.0]
    store = store_mod.Store(clock=lambda: now[0])
    store.put("Hypervisor", report("2026-12-01T09:00:00+00:00"))  # an hour behind
    assert store.is_up("n0", 6)
    assert [h.up for h in store.hosts(6)] == [True]
    now[0] += 5
    store.heard_from("n0")  # its Lease renewed
    now[0] += 5
    assert store.is_up("n0", 6)
    now[0] += 2
    assert not store.is_up("n0", 6)
    assert [h.up for h in store.hosts(6)] == [False]
    later = {**report("2026-12-01T09:00:00+00:00"), "metadata": {"name": "n0"}}
    later["metadata"]["resourceVersion"] = "2"  # a controller write: same report, no heartbeat
    store.put("Hypervisor", later)
    assert not store.is_up("n0", 6)
    assert not store.is_up("never-heard", 6)


def test_a_reverted_migration_keeps_the_source_claimed_until_the_instance_points_back() -> None:
    """Between the agent's `reverted` and the controller's next status write the Instance
    still names the destination: the running original on the source must stay claimed."""
    store = store_mod.Store()
    inst = instance(0, "n1", 1)  # still as in VERIFY_RESIZE: on the destination, new flavor
    inst["status"]["migrationRef"] = "i0-m1"
    inst["metadata"]["resourceVersion"] = "1"
    mig = migration(0, 1, source="n0", dest="n1", old=0, new=1)
    mig["status"] = {"phase": "reverted"}
    mig["metadata"]["resourceVersion"] = "2"
    store.put("Migration", mig)
    store.put("Instance", inst)
    assert usage(store) == {"n0": (store_mod._amount(FLAVORS[0]), 1)}
    settled = {**inst, "status": {**inst["status"], "node": "n0", "flavor": FLAVORS[0]}}
    settled["status"].pop("migrationRef")
    settled["metadata"] = {**inst["metadata"], "resourceVersion": "3"}
    store.put("Instance", settled)
    assert usage(store) == {"n0": (store_mod._amount(FLAVORS[0]), 1)}


def test_a_hypervisors_guest_overhead_counts_for_each_of_its_guests() -> None:
    """The agent's reported overhead (KubeVirt's launcher pods) is added to what the node's
    guests take, whichever came first, the instances or the report; the claims stay theirs."""
    store = store_mod.Store()
    store.put("Instance", instance(0, "n0", 0))  # 1 vCPU, 512 MiB
    store.put("Instance", instance(1, "n0", 1))  # 2 vCPUs, 2048 MiB
    body = report("2026-12-01T10:00:00+00:00")
    body["status"]["agent"]["guestOverhead"] = {
        "memoryMiB": 295,
        "memoryMiBPerVCPU": 8,
        "memoryMiBPerGiB": 2,
    }
    store.put("Hypervisor", body)
    assert store.overhead_mib("n0") == 2 * 295 + 3 * 8 + 5  # 2.5 GiB of guests' memory
    assert store.used["n0"].memory_mib == 512 + 2048  # claims: the flavors alone
    assert store.index.used("n0").memory_mib == 512 + 2048 + 619
    # 4096 MiB: 1024 MiB more fits by the flavors (1536 free), not with launchers (917).
    request = scheduler.Request(Amount(1, 1024, 1))
    assert store.select(request, 60).node is None
    store.remove("Instance", "default/i0")
    assert store.overhead_mib("n0") == 295 + 16 + 4
    assert store.select(request, 60).node == "n0"
