"""Leader election on a coordination.k8s.io/v1 Lease (what kube-controller-manager does).

Every controller replica watches and keeps its store warm; only the Lease holder runs the
work queue and writes, and it asks `is_leader()` before each write. We keep our own elector
rather than kubernetes_asyncio.leaderelection: that one judges expiry by wall-clock
`time.time()`, has no per-call timeout (a hung GET overruns the renew deadline), writes naive
local times, and cannot say until when the holder may still act.

Semantics, as in client-go's leaderelection:

- Decisions use only the local monotonic `clock`, never the times in the Lease: those come
  from other hosts' wall clocks and are written for humans. A standby remembers the last
  record it read and the local time it first saw that record change; another holder's lease
  has expired once it stayed unchanged for its `leaseDurationSeconds`. A released lease (no
  holder) may be taken at once.
- Writes are compare-and-swap on the resourceVersion read; a conflict means we did not get it.
- The holder leads until `renew_deadline` after the moment it SENT its last successful write.
  That write reached the server after it was sent and a standby read it later still, so the
  standby counts its longer `duration` from a later instant: the holder has stopped
  (`is_leader()` False) before any standby may take over. The margin, duration minus
  renew_deadline, absorbs clocks that run at different rates (up to a ratio of about
  duration / renew_deadline) and a write that passed `is_leader()` just before a pause;
  there is no fencing beyond that. A process paused past its deadline finds on resume that
  the monotonic clock has moved on.
- Every API call is bounded by `asyncio.timeout`; a call that times out is a failed attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova import clock

log = logging.getLogger(__name__)

T = TypeVar("T")

# 409: the resourceVersion moved on, or a create lost to another; 422: the write was refused.
CONFLICT_STATUSES = (409, 422)


class Coordination(Protocol):
    """The part of `client.CoordinationV1Api` the elector calls (tests pass a fake).

    Bodies are dicts (Any: the stubs say V1Lease): the client sends a dict as it is, so the
    MicroTime strings are exactly the ones we format."""

    def read_namespaced_lease(self, name: str, namespace: str) -> Awaitable[client.V1Lease]: ...

    def create_namespaced_lease(self, namespace: str, body: Any) -> Awaitable[client.V1Lease]: ...

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: Any
    ) -> Awaitable[client.V1Lease]: ...


@dataclasses.dataclass(frozen=True)
class Record:
    """What a Lease says, parsed once; two equal records mean nobody wrote in between."""

    holder: str
    acquire_time: datetime.datetime | None
    renew_time: datetime.datetime | None
    duration: float
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, lease: client.V1Lease, *, default_duration: float) -> Record:
        spec = lease.spec
        return cls(
            holder=spec.holder_identity or "",
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            duration=float(spec.lease_duration_seconds or default_duration),
            transitions=int(spec.lease_transitions or 0),
            resource_version=lease.metadata.resource_version,
        )


def _utc_now() -> datetime.datetime:
    return clock.now()


def _micro(t: datetime.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the API's MicroTime


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient | None,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_every: float = 5.0,
        renew_deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _utc_now,
        coordination: Coordination | None = None,
    ) -> None:
        """`renew_every` is client-go's retry period: how often the holder renews and a
        standby retries. `renew_deadline` (default 2/3 of `duration`, as in client-go's
        15 s / 10 s) is how long the holder may go without a successful renew."""
        renew_deadline = duration * 2 / 3 if renew_deadline is None else renew_deadline
        if not 0 < renew_every < renew_deadline < duration:
            raise ValueError(
                "leader election needs 0 < renew_every < renew_deadline < duration, got "
                f"{renew_every} / {renew_deadline} / {duration}"
            )
        self.coordination: Coordination = (
            coordination if coordination is not None else client.CoordinationV1Api(api)
        )
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry_period = renew_every
        self.renew_deadline = renew_deadline
        self.clock = clock
        self.wall = wall
        self._observed: Record | None = None  # the last record read or written
        self._observed_at = 0.0  # clock() when that record was first seen
        self._renewed_at: float | None = None  # clock() when our last good write was sent
        self._released = False

    def leader_until(self) -> float | None:
        """The clock time until which this process may act, or None when it does not lead."""
        if self._renewed_at is None:
            return None
        return self._renewed_at + self.renew_deadline

    def is_leader(self) -> bool:
        """May this process write right now? Asked before every write."""
        until = self.leader_until()
        return until is not None and self.clock() < until

    async def _call(self, request: Callable[[], Awaitable[T]], *, end: float) -> T:
        # asyncio.timeout counts on the loop's clock; the delay comes from ours.
        async with asyncio.timeout(max(0.0, end - self.clock())):
            return await request()

    def _observe(self, record: Record | None) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()  # after the answer came: later than the write

    def _taken(self, record: Record) -> bool:
        """Does somebody else hold a lease that has not expired by our observation?"""
        if not record.holder or record.holder == self.identity:
            return False
        return self.clock() - self._observed_at < record.duration

    def _body(self, record: Record | None, *, holder: str | None) -> dict[str, Any]:
        now = self.wall()
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            metadata["resourceVersion"] = record.resource_version
        taking_over = holder is not None and (record is None or record.holder != holder)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                # Whole seconds in the API: round up, so no standby waits less than we last.
                "leaseDurationSeconds": math.ceil(self.duration),
                "acquireTime": _micro(now if taking_over or not record else record.acquire_time),
                "renewTime": _micro(now),
                "leaseTransitions": (record.transitions if record else 0) + int(taking_over),
            },
        }

    def _attempt_end(self) -> float:
        """Each attempt gets a retry period, and a holder no more than it has left."""
        end = self.clock() + self.retry_period
        until = self.leader_until()
        return end if until is None else min(end, until)

    async def _read(self, *, end: float) -> Record | None:
        try:
            lease = await self._call(
                lambda: self.coordination.read_namespaced_lease(self.name, self.namespace),
                end=end,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return Record.of(lease, default_duration=self.duration)

    async def _write(
        self, record: Record | None, body: dict[str, Any], *, end: float
    ) -> client.V1Lease:
        if record is None:
            return await self._call(
                lambda: self.coordination.create_namespaced_lease(self.namespace, body), end=end
            )
        return await self._call(
            lambda: self.coordination.replace_namespaced_lease(self.name, self.namespace, body),
            end=end,
        )

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the lease; True if we hold it afterwards.

        False when another holder's lease is live (we then no longer lead), when another
        writer won the race, when a call timed out, or after `release()`. Other API errors
        raise."""
        if self._released:
            return False
        end = self._attempt_end()
        try:
            record = await self._read(end=end)
            self._observe(record)
            if record is not None and self._taken(record):
                self._renewed_at = None
                return False
            sent = self.clock()
            written = await self._write(record, self._body(record, holder=self.identity), end=end)
        except TimeoutError:
            log.warning("leader election: no answer on %s/%s in time", self.namespace, self.name)
            return False
        except ApiException as exc:
            if exc.status in CONFLICT_STATUSES:
                return False
            raise
        self._observe(Record.of(written, default_duration=self.duration))
        if self._released:  # released while this renew was in flight: it must not count
            return False
        self._renewed_at = sent
        return True

    async def acquire(self) -> None:
        """Block until this process holds the lease."""
        logged = False
        while True:
            started = self.clock()
            try:
                if await self.try_acquire():
                    log.info(
                        "leader election: %s holds %s/%s", self.identity, self.namespace, self.name
                    )
                    return
            except Exception as exc:
                log.warning("leader election: %s", exc)
            if not logged:
                log.info("leader election: standing by for %s/%s", self.namespace, self.name)
                logged = True
            await asyncio.sleep(max(0.0, started + self.retry_period - self.clock()))

    async def hold(self) -> None:
        """Renew every retry period; return when leadership is lost (is_leader() is False).

        After `release()` it renews no more and does not return either: a release is not a
        loss (the controller exits on a return), so it waits to be cancelled."""
        attempted = self.clock()
        while not self._released:
            until = self.leader_until()
            if until is None:
                log.error("leader election: another holder took %s/%s", self.namespace, self.name)
                return
            await asyncio.sleep(max(0.0, min(attempted + self.retry_period, until) - self.clock()))
            if self._released:
                break
            if self.clock() >= until:
                self._renewed_at = None
                log.error(
                    "leader election: %s/%s not renewed within %.1f s",
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                return
            attempted = self.clock()
            try:
                await self.try_acquire()
            except Exception as exc:
                log.warning("leader election: renew failed: %s", exc)
        await asyncio.get_running_loop().create_future()  # never set: ends when cancelled

    async def release(self) -> None:
        """Hand the lease over at once on a clean shutdown (no waiting for expiry).

        Ends this elector: it stops acting first, whatever the API answers, and never takes
        the lease again."""
        self._released = True
        self._renewed_at = None
        end = self.clock() + self.retry_period
        try:
            record = await self._read(end=end)
            if record is None or record.holder != self.identity:
                return
            await self._write(record, self._body(record, holder=None), end=end)
        except Exception as exc:
            log.warning("leader election: release failed: %s", exc)
