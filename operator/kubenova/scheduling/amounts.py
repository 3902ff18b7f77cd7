"""Resource amounts (vCPU, memory MiB, disk GiB) with the arithmetic claims need.

A plain frozen dataclass, not a pydantic model: the scheduler adds and compares these
for every hypervisor on every decision.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True, slots=True)
class Amount:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.vcpus + other.vcpus,
            self.memory_mib + other.memory_mib,
            self.disk_gib + other.disk_gib,
        )

    def __sub__(self, other: Amount) -> Amount:
        return Amount(
            self.vcpus - other.vcpus,
            self.memory_mib - other.memory_mib,
            self.disk_gib - other.disk_gib,
        )

    def fits_in(self, limit: Amount) -> bool:
        return (
            self.vcpus <= limit.vcpus
            and self.memory_mib <= limit.memory_mib
            and self.disk_gib <= limit.disk_gib
        )

    def short_of(self, limit: Amount) -> list[str]:
        """Names of the resources where self exceeds limit (for NoValidHost messages)."""
        names = []
        if self.vcpus > limit.vcpus:
            names.append("vcpus")
        if self.memory_mib > limit.memory_mib:
            names.append("memory")
        if self.disk_gib > limit.disk_gib:
            names.append("disk")
        return names


ZERO = Amount()


@dataclasses.dataclass(frozen=True, slots=True)
class Overhead:
    """Memory a hypervisor spends beside each guest, outside its flavor (Nova's
    estimate_instance_overhead): KubeVirt's launcher pod (drivers/vm.py). The scheduler
    counts it with the claims, as Nova's resource tracker does; it is not part of one."""

    memory_mib: int = 0  # per guest
    memory_mib_per_vcpu: int = 0
    memory_mib_per_gib: int = 0  # of the guest's memory (KubeVirt's page tables)

    def of(self, flavor: Amount) -> Amount:
        """One guest's."""
        return self.total(flavor, 1)

    def total(self, claimed: Amount, guests: int) -> Amount:
        """Of `guests` guests whose claims add up to `claimed` (linear in them, but for the
        share of memory, rounded up once)."""
        fixed = self.memory_mib * guests + self.memory_mib_per_vcpu * claimed.vcpus
        share = math.ceil(claimed.memory_mib * self.memory_mib_per_gib / 1024)
        return Amount(0, fixed + share, 0)


NO_OVERHEAD = Overhead()


def peak(a: Amount, b: Amount) -> Amount:
    """Per-resource maximum: what a same-host resize holds (old and new never both run)."""
    return Amount(
        max(a.vcpus, b.vcpus), max(a.memory_mib, b.memory_mib), max(a.disk_gib, b.disk_gib)
    )


def total(amounts: list[Amount]) -> Amount:
    result = ZERO
    for amount in amounts:
        result = result + amount
    return result
