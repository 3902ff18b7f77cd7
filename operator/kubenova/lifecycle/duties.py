"""The agent's decide(): what one node must do for one Instance, from what it observes. Pure.

The migration steps come from the stage table (lifecycle/stages.py), the same one the
controller reads, so the two cannot disagree on which copy is the truth or what a failure
undoes. The agent's I/O layer (agent/steps.py) only runs what this returns.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum

from kubenova.api import instance, migration, names
from kubenova.lifecycle import conditions, stages

Phase = instance.Phase
Power = instance.PowerState
MPhase = migration.MigrationPhase
EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Observed:
    node: str
    instance: instance.Instance | None  # None: this node no longer selects it
    migrations: tuple[migration.Migration, ...]  # the instance's, among those naming this node
    guest: Power | None = None  # the power of the guest this node runs for it, if any


@dataclasses.dataclass(frozen=True)
class Task:
    """One migration step for this node: run `work.duty`, then write `work.to`."""

    migration: migration.Migration
    role: stages.Role
    work: stages.Work


class Act(enum.StrEnum):
    """What the node the instance is on does outside migrations."""

    NONE = ""
    SPAWN = "spawn"
    POWER_ON = "power-on"
    POWER_OFF = "power-off"
    # The guest was deleted outside kubenova and the controller has said so: define it
    # again from the disk the node kept (never from the image).
    REDEFINE = "redefine"
    RELEASE = "release"  # the Instance is being deleted: remove everything held for it


def newest(migs: tuple[migration.Migration, ...]) -> migration.Migration | None:
    """The instance's latest migration: created last, then changed last (a tie of the
    one-second creation timestamps is broken by the phase transitions' own times)."""

    def when(m: migration.Migration) -> tuple[datetime.datetime, datetime.datetime]:
        last = m.status.phase_transitions[-1].time if m.status.phase_transitions else EPOCH
        return (m.metadata.creation_timestamp or EPOCH, last)

    return max(migs, key=when, default=None)


def _holds(guard: stages.Guard, mig: migration.Migration, obs: Observed) -> bool:
    if guard is stages.Guard.DEST_HOLDS:
        return not mig.status.dest_released
    if guard is stages.Guard.DEST_RELEASED:
        return mig.status.dest_released
    if guard is stages.Guard.SOURCE_LEFT_BEHIND:
        return mig.status.source_down_since is not None and not mig.status.source_cleaned
    pre = mig.status.pre_copy
    if guard is stages.Guard.BASE_PENDING:
        return pre is None or pre.base is None
    if guard is stages.Guard.BASE_OFFERED:
        return stages.base_travelling(mig)
    if guard is stages.Guard.PRE_COPIED:
        return pre is not None and (
            pre.base is migration.BaseState.SKIPPED or pre.copy_ is not None
        )
    if guard is stages.Guard.INSTANCE_IN_ERROR:
        inst = obs.instance
        latest = newest(obs.migrations)
        return (
            inst is not None
            and inst.status.phase is Phase.ERROR
            and latest is not None
            and latest.metadata.uid == mig.metadata.uid
        )
    return True


def _for_this_instance(mig: migration.Migration, obs: Observed) -> bool:
    """A work order names its instance by uid too (its owner reference and instanceUuid):
    an Instance deleted and created again under the same name must not inherit the old
    one's migrations."""
    inst = obs.instance
    if inst is None:
        return True
    owners = {r.uid for r in mig.metadata.owner_references if r.kind == "Instance"}
    if owners and inst.metadata.uid not in owners:
        return False
    return mig.spec.instance_uuid == (inst.status.uuid or inst.metadata.uid)


# Duties that need only the migration: the node may no longer select the Instance (it moved
# on, or failed) or the Instance may be gone.
_WITHOUT_INSTANCE = frozenset({stages.Duty.RELEASE, stages.Duty.CONFIRM})


def tasks(obs: Observed) -> list[Task]:
    """Every migration step due on this node, oldest migration first."""
    due = []
    for mig in sorted(obs.migrations, key=lambda m: m.metadata.creation_timestamp or EPOCH):
        role = stages.role(mig, obs.node)
        if role is None or not _for_this_instance(mig, obs):
            continue
        work = next((w for w in stages.works(mig, role) if _holds(w.guard, mig, obs)), None)
        if work is None or work.duty is stages.Duty.NONE:
            continue
        if obs.instance is None and work.duty not in _WITHOUT_INSTANCE:
            continue
        due.append(Task(mig, role, work))
    return due


def act(obs: Observed) -> Act:
    """Spawn, power and delete on the node the instance is on, when no migration runs."""
    inst = obs.instance
    if inst is not None and inst.metadata.deletion_timestamp is not None:
        return Act.RELEASE  # on every node that still selects it
    if inst is None or inst.status.node != obs.node:
        return Act.NONE
    if any(
        m.status.phase not in migration.FINAL_PHASES and _for_this_instance(m, obs)
        for m in obs.migrations
    ):
        return Act.NONE  # a predecessor's of the same name, not yet collected, does not count
    st, guest = inst.status, obs.guest
    if st.phase is Phase.BUILD and guest is None and st.flavor is not None:
        return Act.SPAWN
    if st.phase not in (Phase.ACTIVE, Phase.SHUTOFF):
        return Act.NONE
    if guest is None:
        ready = conditions.find(st.conditions, names.ConditionType.READY)
        missing = ready is not None and ready.reason == names.GUEST_MISSING
        return Act.REDEFINE if missing and not st.task_state else Act.NONE
    wanted = inst.spec.power_state
    # Powered on only from SHUTOFF: a guest that stopped by itself while ACTIVE is reported,
    # and the controller stops the instance (Nova's power sync); never restarted here.
    if wanted is Power.RUNNING and guest is Power.STOPPED and st.phase is Phase.SHUTOFF:
        return Act.POWER_ON
    if wanted is Power.STOPPED and guest is Power.RUNNING:
        return Act.POWER_OFF
    return Act.NONE


class Verdict(enum.StrEnum):
    """What the orphan sweep does with a guest whose Instance no selection shows."""

    KEEP = "keep"  # its Instance exists (labels off, or a cache behind): never touched
    SUSPECT = "suspect"  # absent now: remembered, looked up again on later sweeps
    QUARANTINE = "quarantine"  # absent on sweeps at least `grace` apart: moved aside


def orphan_verdict(
    *, selected: bool, exists: bool, first_absent: float | None, now: float, grace: float
) -> Verdict:
    """An agent destroys nothing on a cache's word: only an Instance proven gone by a
    lookup that does not depend on labels, on two sweeps `grace` seconds apart, is
    quarantined (design.md §6). `first_absent` is when a sweep first found it gone."""
    if selected or exists:
        return Verdict.KEEP
    if first_absent is None or now - first_absent < grace:
        return Verdict.SUSPECT
    return Verdict.QUARANTINE
