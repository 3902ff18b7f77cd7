"""Where a migration stands, as data: one table keyed by Migration phase and node role.

For every phase it says what the Instance shows (phase, taskState), which resize actions
are accepted, which copy of the disk is the truth, and what each node's agent must do
there. The controller's decide() and the agent's decide() (lifecycle/node.py) both read
it; neither derives "where things stand" on its own.

The rule under every failure path (design.md §6): before a migration reaches `finished`
the original disk on the source is the truth; from `finished` on the new disk on the
destination is, and is never dropped, except by a revert the user asked for. A confirm
that fails goes back to `finished` (revert point kept) and is retried; it never restores
the original. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Mapping

from kubenova.api import instance, migration, names

MPhase = migration.MigrationPhase
Phase = instance.Phase
Task = instance.TaskState
Action = names.ResizeAction


class Copy(enum.StrEnum):
    """Which copy of the guest's disk holds its current data."""

    ORIGINAL = "original"  # on the source: `<uuid>` (cross-node) or `<uuid>_resize` (same host)
    NEW = "new"  # on the destination: the guest built for the new flavor


class Role(enum.StrEnum):
    """What a node is to a migration."""

    SOURCE = "source"
    DEST = "dest"
    SAME_HOST = "same-host"  # source and destination at once


class Duty(enum.StrEnum):
    """What an agent does for a migration on its node (the driver call behind each)."""

    NONE = ""
    SET_ASIDE = "set-aside"  # power off; same host: move the original aside (the revert point)
    ACCEPT = "accept"  # take the work order (migrating -> post-migrating)
    BUILD = "build"  # receive the disk (cross-node), build the guest on the new flavor
    CONFIRM = "confirm"  # drop the revert point (same host) or the source's copy
    RELEASE = "release"  # destination: drop what it received and built for this migration
    RESTORE = "restore"  # source: the original back in place, started if it ran
    # A live resize (spec.mode live) runs the same phases with these in place of the above.
    KEEP_RUNNING = "keep-running"  # nothing is set aside: the guest runs on
    PLUG = "plug"  # grow the running guest (hot-plug; a grown disk on an overlay)
    UNPLUG = "unplug"  # the old sizes back: live where the guest lets go, else cold
    # A cross-node move that pre-copies (spec.preCopy) adds these before the set-aside.
    FREEZE_BASE = "freeze-base"  # source: the guest writes to an overlay; its base is sent
    PRE_COPY = "pre-copy"  # destination: receive the base while the guest still runs


class Guard(enum.StrEnum):
    """A condition a duty waits for, beyond the phase."""

    NONE = ""
    DEST_HOLDS = "dest-holds"  # the destination has not released its copy yet
    DEST_RELEASED = "dest-released"  # it has: the original may start (never two guests)
    SOURCE_LEFT_BEHIND = "source-left-behind"  # confirmed while the source was down
    INSTANCE_IN_ERROR = "instance-in-error"  # only until the controller settles the instance
    BASE_PENDING = "base-pending"  # pre-copy: the source has not frozen the base yet
    BASE_OFFERED = "base-offered"  # it has, and the destination does not hold it yet
    PRE_COPIED = "pre-copied"  # the destination holds the base, or the pre-copy was given up


@dataclasses.dataclass(frozen=True)
class Work:
    """One agent step: the duty, what it waits for, and the phase write that follows it."""

    duty: Duty
    guard: Guard = Guard.NONE
    to: MPhase | None = None  # compare-and-swap from the stage's phase once the duty is done
    on_failure: MPhase | None = MPhase.ERROR  # where a failing duty takes the migration
    marks: str = ""  # a status flag (wire name) the agent sets once the duty is done


@dataclasses.dataclass(frozen=True)
class Stage:
    shows: Phase  # Instance status.phase
    task: Task  # Instance status.taskState
    truth: Copy
    accepts: frozenset[Action]  # resize annotations acted on; others are refused with an event
    work: Mapping[Role, Work]


_NO_ACTION: frozenset[Action] = frozenset()
_SOURCE_SIDE = (Role.SOURCE, Role.SAME_HOST)
_DEST_SIDE = (Role.DEST, Role.SAME_HOST)


def _for(roles: tuple[Role, ...], work: Work) -> dict[Role, Work]:
    return dict.fromkeys(roles, work)


# A failed migration, by where it failed. `error` is final; what the agents do then is
# the undo that makes the truth the only copy that runs.
_FAILED_BEFORE_FINISHED = Stage(
    Phase.ERROR,
    Task.NONE,
    Copy.ORIGINAL,
    _NO_ACTION,
    {
        **_for(_SOURCE_SIDE, Work(Duty.RESTORE, Guard.INSTANCE_IN_ERROR, on_failure=None)),
        Role.DEST: Work(Duty.RELEASE, on_failure=None),
    },
)
# Only records written before confirm failures went back to `finished` can fail after it:
# the new copy stays the truth and nobody undoes anything.
_FAILED_AFTER_FINISHED = Stage(Phase.ERROR, Task.NONE, Copy.NEW, _NO_ACTION, {})

STAGES: Mapping[MPhase, Stage] = {
    MPhase.PRE_MIGRATING: Stage(
        Phase.RESIZE,
        Task.RESIZE_PREP,
        Copy.ORIGINAL,
        _NO_ACTION,
        _for(_SOURCE_SIDE, Work(Duty.SET_ASIDE, to=MPhase.MIGRATING)),
    ),
    MPhase.MIGRATING: Stage(
        Phase.RESIZE,
        Task.RESIZE_MIGRATING,
        Copy.ORIGINAL,
        _NO_ACTION,
        _for(_DEST_SIDE, Work(Duty.ACCEPT, to=MPhase.POST_MIGRATING)),
    ),
    MPhase.POST_MIGRATING: Stage(
        Phase.RESIZE,
        Task.RESIZE_FINISH,
        Copy.ORIGINAL,
        _NO_ACTION,
        _for(_DEST_SIDE, Work(Duty.BUILD, to=MPhase.FINISHED)),
    ),
    MPhase.FINISHED: Stage(
        Phase.VERIFY_RESIZE,
        Task.NONE,
        Copy.NEW,
        frozenset({Action.CONFIRM, Action.REVERT}),
        {},
    ),
    MPhase.CONFIRMING: Stage(
        Phase.VERIFY_RESIZE,
        Task.RESIZE_CONFIRMING,
        Copy.NEW,
        frozenset({Action.CONFIRM}),
        _for(
            _SOURCE_SIDE,
            Work(Duty.CONFIRM, to=MPhase.CONFIRMED, on_failure=MPhase.FINISHED),
        ),
    ),
    # The controller may have confirmed without a source that was down: it cleans up on return.
    MPhase.CONFIRMED: Stage(
        Phase.ACTIVE,
        Task.NONE,
        Copy.NEW,
        _NO_ACTION,
        _for(
            _SOURCE_SIDE,
            Work(Duty.CONFIRM, Guard.SOURCE_LEFT_BEHIND, on_failure=None, marks="sourceCleaned"),
        ),
    ),
    MPhase.REVERTING: Stage(
        Phase.REVERT_RESIZE,
        Task.RESIZE_REVERTING,
        Copy.ORIGINAL,  # the user chose the original: the new copy is being dropped
        frozenset({Action.REVERT}),
        {
            Role.DEST: Work(Duty.RELEASE, Guard.DEST_HOLDS, on_failure=None, marks="destReleased"),
            Role.SOURCE: Work(Duty.RESTORE, Guard.DEST_RELEASED, to=MPhase.REVERTED),
            Role.SAME_HOST: Work(Duty.RESTORE, to=MPhase.REVERTED),
        },
    ),
    MPhase.REVERTED: Stage(Phase.ACTIVE, Task.NONE, Copy.ORIGINAL, _NO_ACTION, {}),
}


# What a live resize does where the table says a cold step (the phases, guards, writes and
# failure paths stay the table's: the original is the truth until `finished`).
LIVE_DUTIES: Mapping[Duty, Duty] = {
    Duty.SET_ASIDE: Duty.KEEP_RUNNING,
    Duty.BUILD: Duty.PLUG,
    Duty.RESTORE: Duty.UNPLUG,
}


# What a cross-node move that pre-copies (spec.preCopy) does at pre-migrating, in order:
# the source freezes the base and offers it, the destination pulls it while the guest runs,
# then the source powers off as the table says (the original, base and overlay, stays the
# truth). A destination cannot fail a migration at pre-migrating: a pre-copy it cannot do
# is abandoned, and the whole disk goes after power-off as without one.
PRE_COPY: Mapping[Role, tuple[Work, ...]] = {
    Role.SOURCE: (
        Work(Duty.FREEZE_BASE, Guard.BASE_PENDING),
        Work(Duty.SET_ASIDE, Guard.PRE_COPIED, to=MPhase.MIGRATING),
    ),
    Role.DEST: (Work(Duty.PRE_COPY, Guard.BASE_OFFERED, on_failure=None),),
}


def works(mig: migration.Migration, role: Role) -> tuple[Work, ...]:
    """The steps `role`'s agent owes `mig` where it stands, for its mode, in order: the
    agent runs the first whose guard holds."""
    if mig.spec.pre_copy and mig.status.phase in (None, MPhase.PRE_MIGRATING):
        return PRE_COPY.get(role, ())
    found = stage(mig).work.get(role)
    if found is None:
        return ()
    if mig.spec.mode is migration.Mode.LIVE:
        found = dataclasses.replace(found, duty=LIVE_DUTIES.get(found.duty, found.duty))
    return (found,)


def task(mig: migration.Migration) -> Task:
    """The Instance's taskState for `mig` where it stands: the table's, except while the
    destination pulls a pre-copy's base (the guest still runs)."""
    copying = mig.status.phase is MPhase.PRE_MIGRATING and base_travelling(mig)
    return Task.RESIZE_PRECOPYING if copying else stage(mig).task


def base_travelling(mig: migration.Migration) -> bool:
    """The source offers a frozen base that the destination does not hold yet."""
    pre = mig.status.pre_copy
    return (
        mig.spec.pre_copy
        and pre is not None
        and pre.base is migration.BaseState.OFFERED
        and pre.copy_ is None
    )


def failed_from(mig: migration.Migration) -> MPhase | None:
    """The phase an errored migration failed in: the last one entered before `error`."""
    before = [t.phase for t in mig.status.phase_transitions if t.phase is not MPhase.ERROR]
    return before[-1] if before else None


def stage(mig: migration.Migration) -> Stage:
    """The table row for a migration as it stands (a new one counts as pre-migrating)."""
    phase = mig.status.phase or MPhase.PRE_MIGRATING
    if phase is not MPhase.ERROR:
        return STAGES[phase]
    late = failed_from(mig) in (MPhase.FINISHED, MPhase.CONFIRMING)
    return _FAILED_AFTER_FINISHED if late else _FAILED_BEFORE_FINISHED


def truth(mig: migration.Migration) -> Copy:
    """Which copy holds the guest's current data, whatever happened to the migration."""
    return stage(mig).truth


def role(mig: migration.Migration, node: str) -> Role | None:
    spec = mig.spec
    if spec.source_node == node == spec.dest_node:
        return Role.SAME_HOST
    if spec.source_node == node:
        return Role.SOURCE
    if spec.dest_node == node:
        return Role.DEST
    return None


def node_of_truth(mig: migration.Migration) -> str:
    """The node whose copy is the truth: where the instance runs."""
    spec = mig.spec
    return spec.dest_node if truth(mig) is Copy.NEW else spec.source_node


def confirm_failures(mig: migration.Migration) -> int:
    """How many confirms of this migration failed (each went confirming -> finished)."""
    phases = [t.phase for t in mig.status.phase_transitions]
    return sum(
        1 for a, b in itertools.pairwise(phases) if a is MPhase.CONFIRMING and b is MPhase.FINISHED
    )


def serves(mig: migration.Migration, node: str, part: migration.Part) -> bool:
    """Whether `node`, as `mig`'s source, serves `part` now: the disk once handed over (or,
    pre-copying, its base once frozen), a pre-copy's delta only after the power-off."""
    if role(mig, node) is not Role.SOURCE:
        return False
    phase = mig.status.phase
    if phase in (MPhase.MIGRATING, MPhase.POST_MIGRATING):
        return True
    pre = mig.status.pre_copy
    return (
        part is migration.Part.DISK
        and mig.spec.pre_copy
        and phase is MPhase.PRE_MIGRATING
        and pre is not None
        and pre.base is migration.BaseState.OFFERED
    )
