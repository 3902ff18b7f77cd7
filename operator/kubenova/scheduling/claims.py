"""Who holds what where: claims derived from Instances and their in-flight Migrations.

The rules (design.md §3), for one instance:
- no active migration: its flavor on its node (status.node / status.flavor), if placed;
- active migration, two nodes: the old flavor on the source (held until confirm) and
  the new flavor on the destination (held until revert);
- active migration, same node: the per-resource maximum of old and new, never the sum
  (Nova bug 1790204 counted both and failed same-host resizes with NoValidHost).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kubenova.scheduling import amounts


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """Where one instance sits and what it uses, as the controller persisted it."""

    owner: str  # namespace/name of the instance
    node: str | None
    flavor: amounts.Amount | None
    # Set while a migration is active (not confirmed, reverted or failed).
    source: str | None = None
    dest: str | None = None
    old_flavor: amounts.Amount | None = None
    new_flavor: amounts.Amount | None = None

    @property
    def migrating(self) -> bool:
        return self.source is not None and self.dest is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    node: str
    amount: amounts.Amount
    owner: str


def claims_of(p: Placement) -> list[Claim]:
    if p.migrating:
        old = p.old_flavor or amounts.ZERO
        new = p.new_flavor or amounts.ZERO
        if p.source == p.dest:
            return [Claim(str(p.source), amounts.peak(old, new), p.owner)]
        return [Claim(str(p.source), old, p.owner), Claim(str(p.dest), new, p.owner)]
    if p.node and p.flavor:
        return [Claim(p.node, p.flavor, p.owner)]
    return []


@dataclasses.dataclass(frozen=True, slots=True)
class NodeUsage:
    amount: amounts.Amount
    instances: int


def usage(placements: Iterable[Placement]) -> dict[str, NodeUsage]:
    """Sum of claims per node; an instance counts once per node it holds resources on."""
    totals: dict[str, amounts.Amount] = {}
    counts: dict[str, int] = {}
    for placement in placements:
        for claim in claims_of(placement):
            totals[claim.node] = totals.get(claim.node, amounts.ZERO) + claim.amount
            counts[claim.node] = counts.get(claim.node, 0) + 1
    return {node: NodeUsage(totals[node], counts[node]) for node in totals}
