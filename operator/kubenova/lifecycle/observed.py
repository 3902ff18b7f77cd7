"""What a reconcile observed, and the small rules both decide() halves share. Pure."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from kubenova.api import common, flavor, instance, migration, names
from kubenova.lifecycle import conditions
from kubenova.lifecycle.draft import Draft
from kubenova.scheduling import amounts

C = names.ConditionType
S = names.ConditionStatus


@dataclasses.dataclass(frozen=True)
class Settings:
    confirm_window_seconds: float = 0.0  # 0: never auto-confirm
    allow_resize_to_same_host: bool = True
    live_resize: bool = True  # a resize may be applied live (lifecycle/live.py)
    pre_copy: bool = True  # a cross-node move of a running guest sends its disk while it runs
    retry_base_seconds: float = 5.0
    retry_cap_seconds: float = 300.0


@dataclasses.dataclass(frozen=True)
class Observed:
    instance: instance.Instance
    # The active migration of this instance, else the one status.migrationRef names.
    migration: migration.Migration | None
    flavor: flavor.FlavorSpec | None  # the Flavor spec.flavor names; None if it does not exist
    now: datetime.datetime
    settings: Settings = Settings()
    # Of the nodes this decision waits for (a deletion, a confirm, a revert): those up, and
    # when each was last heard from (its agent's last heartbeat).
    hosts_up: frozenset[str] = frozenset()
    last_seen: Mapping[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    # The highest sequence among this instance's Migrations known (migration.sequence_of).
    last_migration: int = 0


def amount(snapshot: common.FlavorSnapshot) -> amounts.Amount:
    return amounts.Amount(snapshot.vcpus, snapshot.memory_mib, snapshot.disk_gib)


def snapshot(name: str, spec: flavor.FlavorSpec) -> common.FlavorSnapshot:
    return common.FlavorSnapshot(
        name=name, vcpus=spec.vcpus, memory_mib=spec.memory_mib, disk_gib=spec.disk_gib
    )


def is_active(mig: migration.Migration) -> bool:
    return mig.status.phase not in migration.FINAL_PHASES


def settle_power(d: Draft, actual: instance.PowerState) -> None:
    running = actual is instance.PowerState.RUNNING
    d.phase(instance.Phase.ACTIVE if running else instance.Phase.SHUTOFF)
    if running:
        d.condition(C.READY, S.TRUE, "Running", "the guest is running")
    else:
        d.condition(C.READY, S.FALSE, "Stopped", "the guest is powered off")


def reported_after(host: instance.HostStatus, when: datetime.datetime) -> bool:
    """Whether the node made this report after the controller's change at `when` (a
    condition's transition): by the transition the agent echoes, both times the
    controller's own; reports of older agents only by their (node's) clock."""
    if host.seen_transition is not None:
        return host.seen_transition >= when
    return host.observed_at > when


def backoff(settings: Settings, failures: int) -> float:
    """Capped exponential backoff after `failures` failed attempts (1 = the first)."""
    exponent = max(0, failures - 1)
    return float(min(settings.retry_cap_seconds, settings.retry_base_seconds * 2**exponent))


def retry_after(obs: Observed, type_: names.ConditionType) -> float:
    """Capped backoff from how long the failure has lasted: no attempt counter to store."""
    found = conditions.find(obs.instance.status.conditions, type_.value)
    elapsed = (obs.now - found.last_transition_time).total_seconds() if found else 0.0
    s = obs.settings
    return min(s.retry_cap_seconds, max(s.retry_base_seconds, elapsed))
