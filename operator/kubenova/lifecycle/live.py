"""Live or cold: how a resize is applied, decided from what the controller observes. Pure.

A resize is live when every check below passes, in order; the first that fails is the
reason it is cold (Auto), or why it is refused (Live). The scheduler then prefers the
instance's own node (Auto) or takes nothing else (Live): a live resize never moves the
guest, so a node without room for the new flavor makes it cold (Auto) or unschedulable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kubenova.api import common, instance, migration

Mode = migration.Mode
Policy = instance.ResizePolicy


@dataclasses.dataclass(frozen=True)
class Case:
    """One resize, as the checks see it."""

    policy: Policy
    migrate: bool  # a cold migrate (the annotation): another node by definition
    enabled: bool  # the controller's liveResize setting
    flavor_allows: bool  # the new Flavor's allowLiveResize
    same_host_allowed: bool  # allowResizeToSameHost
    old: common.FlavorSnapshot
    new: common.FlavorSnapshot
    host: instance.HostStatus | None  # the node's report of the running guest


@dataclasses.dataclass(frozen=True)
class Choice:
    mode: Mode
    reason: str
    refused: bool = False  # Live asked, live impossible: nothing is scheduled


def _grows_only(c: Case) -> str | None:
    shrinks = [
        f"{what} {old} -> {new}"
        for what, old, new in (
            ("vCPUs", c.old.vcpus, c.new.vcpus),
            ("memory MiB", c.old.memory_mib, c.new.memory_mib),
        )
        if new < old
    ]
    if shrinks:
        return "the new flavor shrinks " + ", ".join(shrinks) + ": a running guest is not shrunk"
    return None


def _running(c: Case) -> str | None:
    if c.host is None or c.host.power_state is not instance.PowerState.RUNNING:
        return "the guest is not running: a cold resize costs it no downtime"
    return None


def _headroom(c: Case) -> str | None:
    host = c.host
    assert host is not None
    if c.new.vcpus > c.old.vcpus and c.new.vcpus > host.max_vcpus:
        return (
            f"the guest can grow to {host.max_vcpus} vCPUs without a reboot, not {c.new.vcpus}"
            if host.max_vcpus
            else "the guest was defined without hot-plug headroom"
        )
    if c.new.memory_mib > c.old.memory_mib and c.new.memory_mib > host.max_memory_mib:
        return (
            f"the guest can grow to {host.max_memory_mib} MiB without a reboot, "
            f"not {c.new.memory_mib}"
            if host.max_memory_mib
            else "the guest was defined without hot-plug headroom"
        )
    return None


# (check, when it fails: why the resize is not live). Order matters: the first failing
# check is the one reported.
CHECKS: tuple[Callable[[Case], str | None], ...] = (
    lambda c: "a migrate moves the guest to another node" if c.migrate else None,
    lambda c: "spec.resizePolicy is Cold" if c.policy is Policy.COLD else None,
    lambda c: None if c.enabled else "live resize is turned off (the controller's liveResize)",
    lambda c: None if c.flavor_allows else f"flavor {c.new.name} does not allow live resize",
    lambda c: None if c.same_host_allowed else "resizes to the same host are not allowed",
    _grows_only,
    _running,
    _headroom,
)


def choose(case: Case) -> Choice:
    for check in CHECKS:
        why = check(case)
        if why is not None:
            if case.policy is Policy.LIVE and not case.migrate:
                return Choice(Mode.COLD, f"live resize impossible: {why}", refused=True)
            return Choice(Mode.COLD, why)
    return Choice(Mode.LIVE, "grows only, the guest runs and has the headroom")


def after_placement(choice: Choice, source: str, chosen: str) -> Choice:
    """A live choice holds only if the scheduler kept the guest on its node."""
    if choice.mode is Mode.LIVE and chosen != source:
        return Choice(Mode.COLD, f"{source} has no room for the new flavor: moved to {chosen}")
    return choice
