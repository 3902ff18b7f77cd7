"""What must hold in a kubenova cluster whatever fault struck, checked from outside: what the
API holds (Instances, Migrations, Hypervisors, read as the admin) and what the fake
hypervisors hold (their state files, drivers/fake.py). An empty list of violations is green.

1. No hypervisor is overcommitted: the claims recomputed here from Instances and active
   Migrations (design.md §3: the source holds the old flavor, the destination the new one,
   one node the per-resource maximum) fit capacity x allocation ratio; so do the guests
   the fake hypervisor really holds (a defined guest and its revert point, the larger);
   and every guest a hypervisor holds is on a node where its instance holds a claim.
2. Hypervisor status.usage equals those claims: only once settled (`settled=True`), the
   controller writes usage a debounce later (runtime.USAGE_DEBOUNCE_SECONDS).
3. An Instance has at most one active Migration (owner uid = instance uid).
4. A guest runs on at most one node.
5. Artefacts are owned: a revert point, and a guest held on a node that is not its
   Instance's, belong to a live Migration of that instance naming that node (or to a
   confirm completed without its source, which cleans up when it returns).
6. Convergence: `wait_converged` waits until every Instance is steady and returns how long
   it took, with a violation if the bound was exceeded.

Each read of the API is at one etcd revision, every kind in it (`read_api`), so claims are
counted as the controller counted them at that moment. The state files cannot be read
with it: the API is read before and after them, and an artefact counts as owned if either
read shows its Migration live (the agents drop an artefact before they end its Migration,
so a real orphan is unowned in both reads). The checks on a `Snapshot` are pure;
tests/chaos/test_invariants.py feeds them hand-built objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http
import http.client
import json
import pathlib
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterator
from typing import Any

from tests.chaos.views import ZERO, Amount, Guest, Instance, Migration, Snapshot
from tests.env import Env

USAGE_SETTLE_SECONDS = 6.0  # the debounce (1 s) and a full sync (2 s), with room on 2 cores
READ_TIMEOUT = 5.0  # seconds: a down API server fails a read fast
API = "/apis/compute.kubenova.io/v1alpha1"
# Reads the server asks to repeat (AgainError), Retry-After apart (1 s from kube-apiserver),
# as client-go retries them; a compaction twice in a row does not happen in practice.
READ_ATTEMPTS = 5
PAGE = 500  # objects a list answer holds (kubectl's --chunk-size); more come in pages
STEADY = frozenset({"ACTIVE", "SHUTOFF", "VERIFY_RESIZE", "ERROR"})


# --- claims -------------------------------------------------------------------------------


def active_migrations(snap: Snapshot) -> dict[str, list[Migration]]:
    """Instance uid -> its live Migrations, oldest first."""
    found: dict[str, list[Migration]] = {}
    for mig in sorted(snap.migrations, key=lambda m: (m.created, m.key)):
        if mig.live:
            found.setdefault(mig.owner, []).append(mig)
    return found


def _claims_by_instance(snap: Snapshot) -> Iterator[tuple[Instance, str, Amount]]:
    """(instance, node, amount) for every claim, per design.md §3."""
    active = active_migrations(snap)
    reverted = {m.key: m for m in snap.migrations if m.phase == "reverted"}
    for inst in snap.instances:
        migs = active.get(inst.uid)
        if migs:  # the oldest drives the instance (and claims); a second one is violation 3
            mig = migs[0]
            if mig.source == mig.dest:
                yield inst, mig.source, mig.old.peak(mig.new)
            else:
                yield inst, mig.source, mig.old
                yield inst, mig.dest, mig.new
        elif inst.migration_ref in reverted:
            # Reverted, the Instance's status not yet pointed back: the original on the
            # source is the truth and keeps its claim (found here: it was claimed nowhere).
            mig = reverted[inst.migration_ref]
            yield inst, mig.source, mig.old
        elif inst.node and inst.sizes is not None:
            yield inst, inst.node, inst.sizes


def claims(snap: Snapshot) -> dict[str, tuple[Amount, int]]:
    """Node -> (claimed amount, instances holding a claim there)."""
    used: dict[str, Amount] = {}
    counts: dict[str, int] = {}
    for _, node, amount in _claims_by_instance(snap):
        used[node] = used.get(node, ZERO) + amount
        counts[node] = counts.get(node, 0) + 1
    return {node: (used[node], counts[node]) for node in used}


# --- the invariants -----------------------------------------------------------------------


def overcommitted(snap: Snapshot) -> list[str]:
    """1: claims, and what each fake hypervisor really holds, within its limit."""
    found = []
    claimed = claims(snap)
    held: dict[str, Amount] = {}
    for guest in snap.guests:
        held[guest.node] = held.get(guest.node, ZERO) + guest.held
    for hv in snap.hypervisors:
        if hv.limit is None:
            continue
        amount, _ = claimed.get(hv.name, (ZERO, 0))
        if not amount.fits_in(hv.limit):
            found.append(f"overcommit: {hv.name} claims {amount}, limit {hv.limit}")
        if not held.get(hv.name, ZERO).fits_in(hv.limit):
            found.append(
                f"overcommit: {hv.name}'s hypervisor holds {held[hv.name]}, limit {hv.limit}"
            )
    return found


def unclaimed_guests(snap: Snapshot) -> list[str]:
    """1 (what makes the claims mean something): every guest a hypervisor holds for an
    Instance is on a node where that instance holds a claim, in either read; except the copy
    a confirm completed without (design.md §6: released while its node was down)."""
    nodes: dict[str, set[str]] = {}
    for view in (snap, _later(snap)):
        for inst, node, _ in _claims_by_instance(view):
            nodes.setdefault(inst.uuid, set()).add(node)
    left = {
        (m.source, _instance_uuid(m, snap))
        for m in [*snap.migrations, *snap.later_migrations]
        if m.left_behind
    }
    return [
        f"unclaimed guest: {g.uuid} on {g.node} ({'running' if g.running else 'stopped'}), "
        f"its instance claims {sorted(nodes[g.uuid])}{_where_it_stands(snap, g.uuid)}"
        for g in snap.guests
        if g.uuid in nodes and g.node not in nodes[g.uuid] and (g.node, g.uuid) not in left
    ]


def _where_it_stands(snap: Snapshot, uuid: str) -> str:
    """The instance's phase and the Migration its status names, for the report."""
    inst = next((i for i in snap.instances if i.uuid == uuid), None)
    if inst is None:
        return ""
    mig = next((m for m in snap.migrations if m.key == inst.migration_ref), None)
    return f" ({inst.key} {inst.phase}" + (f", {mig.key} {mig.phase})" if mig else ")")


def _later(snap: Snapshot) -> Snapshot:
    return Snapshot(snap.later_instances, snap.later_migrations, snap.hypervisors)


def usage_mismatches(snap: Snapshot) -> list[str]:
    """2: status.usage as the controller wrote it equals the claims recomputed here."""
    claimed = claims(snap)
    found = []
    for hv in snap.hypervisors:
        want = claimed.get(hv.name, (ZERO, 0))
        have = hv.usage or (ZERO, 0)
        if have != want:
            found.append(f"usage: {hv.name} reports {have}, claims add up to {want}")
    return found


def double_migrations(snap: Snapshot) -> list[str]:
    """3: one active Migration per Instance."""
    return [
        f"two active migrations for instance uid {uid}: {[m.key for m in migs]}"
        for uid, migs in sorted(active_migrations(snap).items())
        if len(migs) > 1
    ]


def double_guests(snap: Snapshot) -> list[str]:
    """4: a guest runs on one node at most."""
    running: dict[str, list[str]] = {}
    for guest in snap.guests:
        if guest.running:
            running.setdefault(guest.uuid, []).append(guest.node)
    return [
        f"guest {uuid} runs on {len(nodes)} nodes: {nodes}"
        for uuid, nodes in sorted(running.items())
        if len(nodes) > 1
    ]


def unowned_artefacts(snap: Snapshot) -> list[str]:
    """5: every revert point and every copy away from its instance's node is owned by a live
    Migration naming that node (in either read). Guests of deleted Instances are not judged
    here: the orphan sweep removes them after a grace (`orphans`, a convergence condition)."""
    migs = [*snap.migrations, *snap.later_migrations]
    by_uid: dict[str, list[Migration]] = {}
    for mig in migs:
        by_uid.setdefault(mig.uid, []).append(mig)
    homes: dict[str, set[str]] = {}
    finals = {m.key: m for m in migs if not m.live}
    for inst in [*snap.instances, *snap.later_instances]:
        homes.setdefault(inst.uuid, set()).add(inst.node)
        if inst.migration_ref in finals:  # its status has not caught up with the outcome yet
            homes[inst.uuid] |= finals[inst.migration_ref].landed()
    found = []
    for guest in snap.guests:
        if guest.uuid not in homes:
            continue  # its Instance is gone: `orphans`
        where = f"{guest.uuid} on {guest.node}"
        if guest.revert_point is not None and not _owns(by_uid.get(guest.aside_for, []), guest):
            found.append(f"orphan revert point: {where} (set aside for {guest.aside_for!r})")
        if guest.node in homes[guest.uuid]:
            continue
        ours = [m for m in migs if _instance_uuid(m, snap) == guest.uuid]
        if not _owns(ours, guest):
            what = "received copy" if guest.received_for else "copy"
            found.append(
                f"orphan {what}: {where}, the instance is on {sorted(homes[guest.uuid])} "
                f"and no live migration names {guest.node}"
            )
    return found


def _owns(migs: list[Migration], guest: Guest) -> bool:
    return any(
        m.names(guest.node) and (m.live or (m.left_behind and m.source == guest.node)) for m in migs
    )


def _instance_uuid(mig: Migration, snap: Snapshot) -> str:
    for inst in [*snap.instances, *snap.later_instances]:
        if inst.uid == mig.owner:
            return inst.uuid
    return ""


def violations(snap: Snapshot, *, settled: bool = False) -> list[str]:
    """Every invariant on one snapshot; usage only if `settled`."""
    return [
        *overcommitted(snap),
        *unclaimed_guests(snap),
        *(usage_mismatches(snap) if settled else []),
        *double_migrations(snap),
        *double_guests(snap),
        *unowned_artefacts(snap),
    ]


# --- convergence --------------------------------------------------------------------------


def unsteady(snap: Snapshot, ignore: Collection[str] = ()) -> list[str]:
    """6: what still moves. Steady: ACTIVE, SHUTOFF, VERIFY_RESIZE, or ERROR with a reason;
    no taskState, no pending action, spec.flavor applied unless a condition says why not; a
    BUILD waiting for a host only while no node has room for it. No guest of a deleted
    Instance left on a node. Instances whose uid is in `ignore` are not looked at."""
    return [f"{inst.key}: {why}" for inst, why in _unsteady_instances(snap, ignore)] + orphans(snap)


def _unsteady_instances(snap: Snapshot, ignore: Collection[str]) -> list[tuple[Instance, str]]:
    found = [(inst, _unsteady(inst, snap)) for inst in snap.instances if inst.uid not in ignore]
    return [(inst, why) for inst, why in found if why]


def _unsteady(inst: Instance, snap: Snapshot) -> str:
    if inst.deleting:
        return "still deleting"
    if inst.actions:
        return f"action {inst.actions} not acted on"
    if inst.phase == "BUILD" and inst.reasons.get("Scheduled", ("", ""))[1] == "NoValidHost":
        return _room_for(inst, snap)
    if inst.phase not in STEADY or inst.task:
        return f"{inst.phase or 'no phase'}/{inst.task or '-'}"
    if inst.phase == "ERROR" and not any(r for _, r in inst.reasons.values()):
        return "ERROR without a reason"
    if inst.flavor != inst.applied and not inst.waits():
        return f"spec.flavor {inst.flavor} not applied (runs {inst.applied})"
    return ""


def _room_for(inst: Instance, snap: Snapshot) -> str:
    """A BUILD waiting for a host is steady only while it fits nowhere that is up."""
    flavor = snap.flavors.get(inst.flavor)
    if flavor is None:
        return ""
    claimed = claims(snap)
    for hv in snap.hypervisors:
        used, _ = claimed.get(hv.name, (ZERO, 0))
        if hv.state == "up" and hv.limit is not None and (used + flavor).fits_in(hv.limit):
            return f"waits for a host although {hv.name} has room"
    return ""


def orphans(snap: Snapshot) -> list[str]:
    """Guests whose Instance is gone from both reads (left while their node was down)."""
    known = {i.uuid for i in [*snap.instances, *snap.later_instances]}
    return [
        f"guest {g.uuid} on {g.node} belongs to no instance"
        for g in snap.guests
        if g.uuid not in known
    ]


# --- reading a running Env ----------------------------------------------------------------


def snapshot(env: Env) -> Snapshot:
    """Read the API, every fake hypervisor's state file, the API again; each read of the
    API at one revision (`read_api`). Raises AssertionError if the API server does not
    answer."""
    list_at = api_lister(env)
    first = read_api(list_at, ("instances", "migrations", "hypervisors", "flavors"))
    guests = {
        path.name.removeprefix("hypervisor-").removesuffix(".json"): _read_state(path)
        for path in sorted(env.dir.glob("hypervisor-*.json"))
    }
    later = read_api(list_at, ("instances", "migrations"))
    return Snapshot.of(first, guests, later)


class AgainError(AssertionError):
    """The API server asks for the read again: its revision is compacted away (410; the
    watch-expiry fault compacts etcd), or it is busy or shutting down (429 Retry-After).
    An AssertionError, as every read that fails is here, once the attempts are spent."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# plural, revision (None: the newest) -> the List as the API server answers it
Lister = Callable[[str, str | None], dict[str, Any]]


def read_api(list_at: Lister, plurals: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every object of `plurals` as of one etcd revision: the first kind at the newest,
    the others at exactly the revision that list answered at (etcd's revision is global).

    Not `kubectl get a,b`: it lists one kind after another, each at its own revision, and
    the controller's writes land in between. Seen in `make chaos` (seed 1864615412): an
    Instance was listed just before its deletion freed its claim on node-4, the Migrations
    just after the controller claimed that room for another instance, so node-4 looked
    overcommitted although no revision ever held both claims."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return _read_at_one_revision(list_at, plurals)
        except AgainError as exc:
            if attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(exc.retry_after)
    raise AssertionError("unreachable")


def _read_at_one_revision(list_at: Lister, plurals: tuple[str, ...]) -> list[dict[str, Any]]:
    first = list_at(plurals[0], None)
    revision = first["metadata"]["resourceVersion"]
    rest = [list_at(plural, revision) for plural in plurals[1:]]
    return [item for found in (first, *rest) for item in found["items"]]


def api_lister(env: Env) -> Lister:
    """Raw lists of kubenova's kinds, all namespaces, as the admin: over HTTPS from this
    process, not a kubectl per kind (six a snapshot, one every 0.3 s while converging, would
    take the 2 cores from what is under test)."""
    tls = env.plane.admin_context()

    def get(query: str) -> dict[str, Any]:
        url = f"{env.plane.server}{query}"
        try:
            with urllib.request.urlopen(url, context=tls, timeout=READ_TIMEOUT) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            why = f"GET {url}: {exc.code} {exc.reason}"
            if exc.code == http.HTTPStatus.TOO_MANY_REQUESTS:  # kubectl would retry too
                raise AgainError(why, float(exc.headers.get("Retry-After") or 0)) from exc
            if exc.code == http.HTTPStatus.GONE:
                raise AgainError(why) from exc
            raise AssertionError(why) from exc
        except (OSError, http.client.HTTPException) as exc:  # down, restarting, cut off
            raise AssertionError(f"GET {url}: {exc!r}") from exc

    def list_at(plural: str, revision: str | None) -> dict[str, Any]:
        # A limit, as kubectl sends: a watch cache still initializing after a restart passes
        # such a list to etcd, and answers one without it 429 for as long (seconds) as it is.
        query = f"{API}/{plural}?limit={PAGE}"
        exact = f"&resourceVersion={revision}&resourceVersionMatch=Exact" if revision else ""
        found = get(query + exact)
        token = found["metadata"].get("continue")
        while token:  # the next page, at the revision of the first (the token holds it)
            page = get(f"{query}&continue={urllib.parse.quote(token)}")
            found["items"] += page["items"]
            token = page["metadata"].get("continue")
        return found

    return list_at


def _read_state(path: pathlib.Path) -> dict[str, Any]:
    # The agent replaces the file atomically (drivers/fake.py), so a read is whole.
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {}


def check(env: Env, *, settled: bool = False, snap: Snapshot | None = None) -> list[str]:
    """The invariants now (or on `snap`, a snapshot just taken). `settled`: the cluster is
    quiet, so usage must match too; a mismatch is looked at again for USAGE_SETTLE_SECONDS
    before it counts (the controller writes usage a debounce late)."""
    snap = snap or snapshot(env)
    found = violations(snap)
    if not settled:
        return found
    deadline = time.monotonic() + USAGE_SETTLE_SECONDS
    while usage := usage_mismatches(snap):
        if time.monotonic() > deadline:
            return sorted({*found, *usage})
        time.sleep(0.5)
        snap = snapshot(env)
        found = sorted({*found, *violations(snap)})
    return found


@dataclasses.dataclass
class Converged:
    seconds: float
    violations: list[str]
    last: Snapshot | None = None  # the steady snapshot, for a check right after
    stuck: list[str] = dataclasses.field(default_factory=list)  # uids still unsteady at the end


def wait_converged(
    env: Env,
    timeout: float = 60.0,
    *,
    tick: Callable[[], None] | None = None,
    ignore: Collection[str] = (),
) -> Converged:
    """Poll until nothing is unsteady; how long it took, and a violation past `timeout`.
    `tick` runs before each look (the chaos runner restarts exited processes there);
    Instances whose uid is in `ignore` are not waited for."""
    began = time.monotonic()
    last: list[str] = []
    stuck: list[str] = []
    while True:
        if tick is not None:
            tick()
        try:
            snap = snapshot(env)
            stuck = [inst.uid for inst, _ in _unsteady_instances(snap, ignore)]
            last = unsteady(snap, ignore)
        except (AssertionError, subprocess.TimeoutExpired) as exc:  # the API is not back yet
            last = [f"API unreachable: {str(exc).splitlines()[0]}"]
        elapsed = time.monotonic() - began
        if not last:
            return Converged(elapsed, [], snap)
        if elapsed > timeout:
            return Converged(elapsed, [f"not converged within {timeout:.0f}s: {last}"], None, stuck)
        time.sleep(0.3)


@dataclasses.dataclass
class Samples:
    """What a background sampler saw: each violation once, when it was first and last seen
    (seconds into the sampling), and how many looks were taken or missed."""

    violations: list[str] = dataclasses.field(default_factory=list)
    seen: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    taken: int = 0
    missed: int = 0  # the API server did not answer

    def saw(self, found: list[str], at: float) -> None:
        self.taken += 1
        for v in found:
            if v not in self.seen:
                self.violations.append(v)
            self.seen[v] = (self.seen.get(v, (at, at))[0], at)

    def report(self) -> list[str]:
        return [
            f"{v} (seen {self.seen[v][0]:.1f}s..{self.seen[v][1]:.1f}s)" for v in self.violations
        ]


@contextlib.contextmanager
def sampling(env: Env, interval: float = 1.0) -> Iterator[Samples]:
    """Check the invariants in the background while the block runs (faults included)."""
    seen = Samples()
    stop = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            try:
                found = violations(snapshot(env))
            except (AssertionError, OSError, ValueError, subprocess.TimeoutExpired):
                seen.missed += 1
            else:
                seen.saw(found, time.monotonic() - began)
            stop.wait(interval)

    thread = threading.Thread(target=sample, name="invariants", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
