"""Leader election: one leader at a time under clock skew, hung calls and process pauses.

No API server: `Server` keeps one Lease with the resourceVersion checks of the real one, and
each elector talks to it through its own `Coordination`, which can hang (a partition) or run
a rival's write first (a race). Most tests drive the elector's clock by hand; the hung-renew
test uses the real monotonic clock with sub-second timings, as it needs the timeouts to fire.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.kube import lease

NAMESPACE, NAME = "kubenova", "kubenova-controller"
EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)  # wall time at clock 0
# Sub-second timings for the real-clock tests; the Lease stores whole seconds (1 s here).
FAST = {"duration": 1.0, "renew_deadline": 0.3, "renew_every": 0.1}


def _time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


class Server:
    """The Lease as the API server keeps it: a resourceVersion bumped on every write."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None
        self.version = 0
        self.history: list[tuple[float, str | None]] = []  # (monotonic time, holder) per write

    @property
    def holder(self) -> str | None:
        return None if self.body is None else self.body["spec"]["holderIdentity"]

    def read(self) -> client.V1Lease:
        if self.body is None:
            raise ApiException(status=404, reason="NotFound")
        spec = self.body["spec"]
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=NAME, namespace=NAMESPACE, resource_version=str(self.version)
            ),
            spec=client.V1LeaseSpec(
                holder_identity=spec["holderIdentity"],
                acquire_time=_time(spec.get("acquireTime")),
                renew_time=_time(spec.get("renewTime")),
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                lease_transitions=spec.get("leaseTransitions"),
            ),
        )

    def write(self, body: dict[str, Any], *, create: bool) -> client.V1Lease:
        if create and self.body is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        if not create:
            if self.body is None:
                raise ApiException(status=404, reason="NotFound")
            if body["metadata"].get("resourceVersion") != str(self.version):
                raise ApiException(status=409, reason="Conflict")
        return self.force(body)

    def force(self, body: dict[str, Any]) -> client.V1Lease:
        """Store a body with no checks (what a rival's successful write leaves behind)."""
        self.body = copy.deepcopy(body)
        self.version += 1
        self.history.append((time.monotonic(), self.holder))
        return self.read()


def held_by(holder: str) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0},
    }


async def forever() -> None:
    await asyncio.get_running_loop().create_future()


class Coordination:
    """One elector's view of `Server` through the CoordinationV1Api calls it makes.

    `hang`: "request" never delivers a write, "answer" applies it and never answers.
    `before_write` runs as a write arrives, before the server checks it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.calls: list[str] = []
        self.hang: str | None = None
        self.before_write: Callable[[], None] | None = None

    async def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        self.calls.append("read")
        return self.server.read()

    async def create_namespaced_lease(self, namespace: str, body: Any) -> client.V1Lease:
        self.calls.append("create")
        return await self._write(body, create=True)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: Any
    ) -> client.V1Lease:
        self.calls.append("replace")
        return await self._write(body, create=False)

    async def _write(self, body: dict[str, Any], *, create: bool) -> client.V1Lease:
        if self.before_write is not None:
            self.before_write()
        if self.hang == "request":
            await forever()
        written = self.server.write(body, create=create)
        if self.hang == "answer":
            await forever()
        return written


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self, skew: float) -> Callable[[], datetime.datetime]:
        """This host's wall clock, `skew` seconds off."""
        return lambda: EPOCH + datetime.timedelta(seconds=self.now + skew)


def elector(coordination: Coordination, identity: str, **options: Any) -> lease.LeaderElector:
    return lease.LeaderElector(
        None,
        namespace=NAMESPACE,
        name=NAME,
        identity=identity,
        coordination=coordination,
        **options,
    )


def micro(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(
    ("holder_skew", "standby_skew"),
    [(0.0, 30.0), (0.0, -30.0), (30.0, 0.0), (-30.0, 0.0)],
    ids=["standby-ahead-30s", "standby-behind-30s", "holder-ahead-30s", "holder-behind-30s"],
)
def test_standby_takes_over_a_duration_after_the_lease_last_changed(
    holder_skew: float, standby_skew: float
) -> None:
    server, clock = Server(), Clock()
    holder = elector(Coordination(server), "holder", clock=clock, wall=clock.wall(holder_skew))
    standby = elector(Coordination(server), "standby", clock=clock, wall=clock.wall(standby_skew))

    async def scenario() -> None:
        assert await holder.try_acquire()
        for _ in range(12):  # a minute of renews every 5 s: four lease durations
            assert not await standby.try_acquire()
            clock.now += 5.0
            assert await holder.try_acquire()
        last_change = clock.now
        assert not await standby.try_acquire()  # it reads the last renew at once
        clock.now = last_change + 15.0 - 0.001
        assert not await standby.try_acquire()
        clock.now = last_change + 15.0
        assert await standby.try_acquire()

    asyncio.run(scenario())
    assert server.holder == "standby"
    assert server.body is not None
    spec = server.body["spec"]  # the wall clock fills the fields, for humans only
    assert spec["acquireTime"] == micro(clock.wall(standby_skew)())
    assert spec["leaseTransitions"] == 2


@pytest.mark.parametrize("hang", ["request", "answer"], ids=["renew-lost", "answer-lost"])
def test_hung_renew_ends_leadership_before_a_standby_takes_over(hang: str) -> None:
    server = Server()
    partitioned = Coordination(server)
    old = elector(partitioned, "old", **FAST)
    new = elector(Coordination(server), "new", **FAST)
    both: list[float] = []

    async def watch() -> None:
        while True:
            if old.is_leader() and new.is_leader():
                both.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def lose() -> float:
        await old.hold()
        return time.monotonic()

    async def scenario() -> tuple[float, float]:
        async with asyncio.timeout(5):  # the whole story takes about 1.3 s
            await old.acquire()
            until = old.leader_until()
            assert until is not None
            partitioned.hang = hang
            watcher = asyncio.create_task(watch())
            losing = asyncio.create_task(lose())
            await new.acquire()
            lost_at = await losing
            watcher.cancel()
        assert until <= lost_at < until + 0.2
        return until, lost_at

    until, _ = asyncio.run(scenario())
    assert not old.is_leader()
    assert old.leader_until() is None
    assert both == []
    new_until = new.leader_until()
    assert new_until is not None
    taken_at = new_until - FAST["renew_deadline"]  # when the new holder's write was sent
    assert taken_at >= until
    last_old_write = max(t for t, holder in server.history if holder == "old")
    assert last_old_write + FAST["duration"] <= taken_at < last_old_write + FAST["duration"] + 0.5


@pytest.mark.parametrize(
    ("pause", "leads"),
    [(9.999, True), (10.0, False), (60.0, False)],
    ids=["inside-the-deadline", "at-the-deadline", "past-the-lease"],
)
def test_is_leader_turns_false_when_the_clock_jumps_past_the_deadline(
    pause: float, leads: bool
) -> None:
    clock = Clock()
    leader = elector(Coordination(Server()), "leader", clock=clock)  # 15 s lease, 10 s deadline
    assert asyncio.run(leader.try_acquire())
    assert leader.leader_until() == 10.0
    clock.now += pause  # SIGSTOP, then SIGCONT: no renew has run in between
    assert leader.is_leader() is leads


def test_hold_returns_without_a_call_after_a_pause_past_the_deadline() -> None:
    clock = Clock()
    coordination = Coordination(Server())
    leader = elector(coordination, "leader", clock=clock)
    assert asyncio.run(leader.try_acquire())
    calls = list(coordination.calls)
    clock.now += 60.0
    asyncio.run(asyncio.wait_for(leader.hold(), timeout=1))
    assert coordination.calls == calls
    assert leader.leader_until() is None


def test_a_slow_answer_does_not_extend_leadership() -> None:
    clock = Clock()
    coordination = Coordination(Server())
    leader = elector(coordination, "leader", clock=clock)

    def slow() -> None:
        clock.now += 4.0

    coordination.before_write = slow
    assert asyncio.run(leader.try_acquire())
    assert leader.leader_until() == 10.0  # counted from the send at 0, not the answer at 4


def _rival_writes(server: Server) -> None:
    server.force(held_by("rival"))


def _refused() -> None:
    raise ApiException(status=422, reason="Invalid")


@pytest.mark.parametrize(
    ("existing", "race", "holder_after"),
    [
        ("", _rival_writes, "rival"),
        (None, _rival_writes, "rival"),
        ("", lambda _: _refused(), ""),
    ],
    ids=["replace-conflict-409", "create-conflict-409", "replace-refused-422"],
)
def test_a_lost_write_race_does_not_acquire(
    existing: str | None, race: Callable[[Server], None], holder_after: str
) -> None:
    server = Server()
    if existing is not None:
        server.force(held_by(existing))  # "" is a released lease: free to take at once
    coordination = Coordination(server)
    coordination.before_write = lambda: race(server)
    candidate = elector(coordination, "candidate", clock=Clock())
    assert not asyncio.run(candidate.try_acquire())
    assert candidate.leader_until() is None
    assert not candidate.is_leader()
    assert server.holder == holder_after


@pytest.mark.parametrize(
    ("holder", "cleared"),
    [("leader", True), ("rival", False), (None, False)],
    ids=["we-hold-it", "another-holds-it", "no-lease"],
)
def test_release_clears_the_holder_only_when_we_hold_it(holder: str | None, cleared: bool) -> None:
    server, clock = Server(), Clock()
    leader = elector(Coordination(server), "leader", clock=clock)
    if holder == "leader":
        assert asyncio.run(leader.try_acquire())
    elif holder is not None:
        server.force(held_by(holder))
    version = server.version
    asyncio.run(leader.release())
    assert not leader.is_leader()
    assert server.holder == (None if cleared or holder is None else holder)
    assert server.version == version + int(cleared)
    if cleared:  # a released lease is taken at once, with no wait for expiry
        assert asyncio.run(elector(Coordination(server), "next", clock=clock).try_acquire())


def test_release_stops_renewing_without_hold_returning() -> None:
    server = Server()
    leader = elector(Coordination(server), "leader", **FAST)

    async def scenario() -> bool:
        await leader.acquire()
        holding = asyncio.create_task(leader.hold())
        await leader.release()
        # A few retry periods: a renew now would take the released lease back.
        done, _ = await asyncio.wait({holding}, timeout=4 * FAST["renew_every"])
        holding.cancel()
        return bool(done)

    assert not asyncio.run(scenario())  # the controller exits when hold() returns
    assert server.holder is None


@pytest.mark.parametrize(
    "timing",
    [
        {"renew_deadline": 15.0},
        {"renew_deadline": 20.0},
        {"renew_deadline": 5.0},
        {"renew_every": 0.0},
    ],
    ids=[
        "deadline-equals-duration",
        "deadline-past-duration",
        "retry-not-under-deadline",
        "no-retry",
    ],
)
def test_inconsistent_timing_is_refused(timing: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="renew_deadline < duration"):
        elector(Coordination(Server()), "leader", duration=15.0, **timing)
