"""Placement decisions: filters, then a weigher, with deterministic ties (Nova's FilterScheduler).

Pure: takes the hypervisors and current usage, returns a node or the reasons none fits.
The caller serialises decisions and persists the claim before the next one.
"""

from __future__ import annotations

import collections
import dataclasses
import enum

from kubenova.scheduling import amounts


class Weigher(enum.StrEnum):
    SPREAD = "spread"  # most free memory first (Nova's default RAMWeigher)
    PACK = "pack"  # least free memory first


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    name: str
    capacity: amounts.Amount
    cpu_ratio: float = 4.0
    memory_ratio: float = 1.0
    disk_ratio: float = 1.0
    labels: tuple[tuple[str, str], ...] = ()
    up: bool = True
    disabled: bool = False
    cordoned: bool = False  # the Kubernetes Node is unschedulable
    overhead: amounts.Overhead = amounts.NO_OVERHEAD  # beside each guest (the driver's)

    @property
    def limit(self) -> amounts.Amount:
        """Schedulable amount: capacity x allocation ratio, rounded down."""
        return amounts.Amount(
            int(self.capacity.vcpus * self.cpu_ratio),
            int(self.capacity.memory_mib * self.memory_ratio),
            int(self.capacity.disk_gib * self.disk_ratio),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    flavor: amounts.Amount
    node_selector: tuple[tuple[str, str], ...] = ()
    # The node the instance is on (None when it is being built) and what it holds there.
    source: str | None = None
    source_flavor: amounts.Amount | None = None
    allow_same_host: bool = True  # a cold migrate passes False
    only: str | None = None  # a migrate to a named node
    prefer: str | None = None  # taken whenever it fits (a live resize stays on its node)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    node: str | None
    # reason -> number of hosts rejected for it, for the NoValidHost message
    rejected: dict[str, int]

    @property
    def message(self) -> str:
        if self.node:
            return f"scheduled to {self.node}"
        if not self.rejected:
            return "no valid host: no hypervisors are registered"
        hosts = sum(self.rejected.values())
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.rejected.items()))
        return f"no valid host among {hosts} hypervisors: {reasons}"


def rejection(host: Host, request: Request, used: amounts.Amount) -> str | None:
    """Why `host` cannot take the request, or None if it can. `used` is what the host's
    guests take: their claims and the host's overhead for each (`index.HostIndex.used`)."""
    if request.only is not None and host.name != request.only:
        return "not the requested host"
    if host.name == request.source and not request.allow_same_host:
        return "the current host"
    if not host.up:
        return "down"
    if host.disabled:
        return "disabled"
    if host.cordoned:
        return "cordoned"
    labels = dict(host.labels)
    if any(labels.get(k) != v for k, v in request.node_selector):
        return "not matching nodeSelector"
    cost = host.overhead.of
    if host.name == request.source and request.source_flavor is not None:
        # Same host: the instance's old claim becomes max(old, new), not old + new; it
        # still runs once, so it pays the overhead once.
        old, new = request.source_flavor, amounts.peak(request.source_flavor, request.flavor)
        needed = used - old - cost(old) + new + cost(new)
    else:
        needed = used + request.flavor + cost(request.flavor)
    short = needed.short_of(host.limit)
    if short:
        return "short of " + " and ".join(short)
    return None


def free_fraction(host: Host, used: amounts.Amount) -> float:
    limit = host.limit
    if limit.memory_mib <= 0:
        return 0.0
    return (limit.memory_mib - used.memory_mib) / limit.memory_mib


def sort_key(host: Host, used: amounts.Amount, weigher: Weigher) -> tuple[float, str]:
    """Lower wins; the name breaks ties so equal hosts always resolve the same way."""
    sign = -1.0 if weigher is Weigher.SPREAD else 1.0
    return (sign * free_fraction(host, used), host.name)


def select(
    hosts: list[Host],
    used: dict[str, amounts.Amount],
    request: Request,
    weigher: Weigher = Weigher.SPREAD,
) -> Decision:
    """The reference: filter and weigh every host, O(hosts). `index.HostIndex` gives the
    same answer without the full scan and is what the controller uses."""
    for host in hosts:
        if host.name == request.prefer and rejection(host, request, _used(used, host)) is None:
            return Decision(node=host.name, rejected={})
    rejected: collections.Counter[str] = collections.Counter()
    best: tuple[float, str] | None = None
    for host in hosts:
        host_used = _used(used, host)
        reason = rejection(host, request, host_used)
        if reason is not None:
            rejected[reason] += 1
            continue
        key = sort_key(host, host_used, weigher)
        if best is None or key < best:
            best = key
    return Decision(node=best[1] if best else None, rejected=dict(rejected))


def _used(used: dict[str, amounts.Amount], host: Host) -> amounts.Amount:
    return used.get(host.name, amounts.ZERO)
