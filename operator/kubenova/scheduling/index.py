"""Hosts kept sorted by the weigher's key, so a decision need not look at every host.

`scheduler.select` filters and weighs every host: O(hosts) per decision (13 ms at 5,000
hypervisors). The index keeps the hosts ordered by the weigher's key (free memory
fraction, then name) and is updated incrementally when a host or its usage changes,
so a decision walks hosts best-first and stops at the first one the filters accept:
that host has the lowest key among those accepted, which is exactly the reference's
choice. Memory prunes the walk: a host whose free fraction is below
`request memory / largest memory limit` cannot have enough free memory, and neither
can any host after it in the order, so the walk starts (pack) or stops (spread) there.

Invariants: the answer's `node` and `message` equal `scheduler.select`'s on the same
hosts, usage and request (property test). When no host fits, the index runs the
reference over every host so that the NoValidHost reasons are counted exactly; when one
fits, `rejected` counts only the hosts looked at before it (no message shows it).

Up or down is judged at decision time from each host's last heartbeat (`seen_after`),
not stored, so a silent host counts as down the moment its heartbeat is too old. Times
are the caller's (the controller's monotonic clock): never another host's.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math

from kubenova.scheduling import amounts, scheduler

Key = tuple[float, str]


class HostIndex:
    def __init__(self, weigher: scheduler.Weigher = scheduler.Weigher.SPREAD) -> None:
        self.weigher = weigher
        self._hosts: dict[str, scheduler.Host] = {}
        self._seen: dict[str, float] = {}  # last heartbeat, on the caller's clock
        self._used: dict[str, amounts.Amount] = {}  # claims
        self._guests: dict[str, int] = {}
        self._keys: dict[str, Key] = {}
        self._order: list[Key] = []  # ascending: best first
        self._memory_limits: list[int] = []  # ascending: the last is the largest

    def __len__(self) -> int:
        return len(self._hosts)

    # --- updates -----------------------------------------------------------------------------

    def put(self, host: scheduler.Host, *, seen_at: float | None = None) -> None:
        """Add or replace a host; `seen_at` is its last heartbeat (None: trust host.up)."""
        if seen_at is None:
            self._seen.pop(host.name, None)
        else:
            self._seen[host.name] = seen_at
        if self._hosts.get(host.name) == host:
            return  # a heartbeat: nothing that orders or filters hosts changed
        self.remove(host.name, keep_seen=True)
        self._hosts[host.name] = host
        bisect.insort(self._memory_limits, host.limit.memory_mib)
        self._insert(host.name)

    def seen(self, name: str, at: float) -> None:
        """A heartbeat of `name` at `at` (the caller's clock; `seen_after` uses the same)."""
        self._seen[name] = at

    def remove(self, name: str, *, keep_seen: bool = False) -> None:
        host = self._hosts.pop(name, None)
        if not keep_seen:
            self._seen.pop(name, None)
        if host is None:
            return
        limits = self._memory_limits
        del limits[bisect.bisect_left(limits, host.limit.memory_mib)]
        self._unlink(name)

    def set_used(self, name: str, used: amounts.Amount, guests: int = 0) -> None:
        """What the host's claims add up to, and how many guests hold them; kept for hosts
        not (yet) registered too."""
        if (self._used.get(name, amounts.ZERO), self._guests.get(name, 0)) == (used, guests):
            return
        self._used[name], self._guests[name] = used, guests
        if name in self._hosts:
            self._unlink(name)
            self._insert(name)

    def used(self, name: str) -> amounts.Amount:
        """What the host's guests take: their claims, and the host's overhead for each."""
        claimed = self._used.get(name, amounts.ZERO)
        host = self._hosts.get(name)
        if host is None:
            return claimed
        return claimed + host.overhead.total(claimed, self._guests.get(name, 0))

    def _insert(self, name: str) -> None:
        host = self._hosts[name]
        key = scheduler.sort_key(host, self.used(name), self.weigher)
        self._keys[name] = key
        bisect.insort(self._order, key)

    def _unlink(self, name: str) -> None:
        key = self._keys.pop(name, None)
        if key is not None:
            del self._order[bisect.bisect_left(self._order, key)]

    # --- decisions ---------------------------------------------------------------------------

    def hosts(self, *, seen_after: float = -math.inf) -> list[scheduler.Host]:
        """Every host as the reference scheduler sees it: down if not seen since `seen_after`."""
        return [self._as_seen(h, seen_after) for h in self._hosts.values()]

    def _as_seen(self, host: scheduler.Host, seen_after: float) -> scheduler.Host:
        seen = self._seen.get(host.name)
        if host.up and seen is not None and seen < seen_after:
            return dataclasses.replace(host, up=False)
        return host

    def select(
        self, request: scheduler.Request, *, seen_after: float = -math.inf
    ) -> scheduler.Decision:
        found = self._fast(request, seen_after)
        if found is not None:
            return found
        # Nothing fits: the reference counts every host's reason for the message.
        every = self.hosts(seen_after=seen_after)
        used = {host.name: self.used(host.name) for host in every}
        return scheduler.select(every, used, request, self.weigher)

    def _fast(self, request: scheduler.Request, seen_after: float) -> scheduler.Decision | None:
        if request.only is not None:
            return self._try(request.only, request, seen_after, collections.Counter())
        rejected: collections.Counter[str] = collections.Counter()
        if request.prefer is not None:
            found = self._try(request.prefer, request, seen_after, collections.Counter())
            if found is not None:
                return found
        start, bound = 0, self._memory_bound(request)
        spread = self.weigher is scheduler.Weigher.SPREAD
        if not spread:
            start = bisect.bisect_left(self._order, (bound, ""))
        visited_source = False
        source_key = self._keys.get(request.source or "")
        if not spread and source_key is not None and source_key < (bound, ""):
            # Pack: of the hosts before the bound only the source can fit (see below), and
            # it would come first.
            visited_source = True
            found = self._try(str(request.source), request, seen_after, rejected)
            if found is not None:
                return found
        for i in range(start, len(self._order)):
            fraction, name = self._order[i]
            if spread and -fraction < bound:
                break  # this host and every one after it is short of memory
            visited_source = visited_source or name == request.source
            found = self._try(name, request, seen_after, rejected)
            if found is not None:
                return found
        # A same-host resize frees the old flavor first, so the source may fit although its
        # free fraction is below the bound; every other host past the bound cannot.
        if request.source is not None and not visited_source:
            return self._try(request.source, request, seen_after, rejected)
        return None

    def _try(
        self,
        name: str,
        request: scheduler.Request,
        seen_after: float,
        rejected: collections.Counter[str],
    ) -> scheduler.Decision | None:
        host = self._hosts.get(name)
        if host is None:
            return None
        reason = scheduler.rejection(self._as_seen(host, seen_after), request, self.used(name))
        if reason is None:
            return scheduler.Decision(node=name, rejected=dict(rejected))
        rejected[reason] += 1
        return None

    def _memory_bound(self, request: scheduler.Request) -> float:
        """The lowest free fraction at which any host could hold the request's memory."""
        largest = self._memory_limits[-1] if self._memory_limits else 0
        if largest <= 0:
            return -math.inf
        return request.flavor.memory_mib / largest
