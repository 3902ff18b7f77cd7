"""decide() for an instance with a migration in flight or just ended. Pure.

What the Instance shows and which copy it runs from come from the stage table
(lifecycle/stages.py), the same one the agents read; this module adds what only the
controller does: events, conditions, the action annotations and the next phase it writes.
"""

from __future__ import annotations

import datetime

from kubenova.api import instance, migration, names
from kubenova.lifecycle import conditions, plan, stages
from kubenova.lifecycle.draft import Draft
from kubenova.lifecycle.observed import Observed, backoff, is_active, settle_power

Phase = instance.Phase
TaskState = instance.TaskState
MPhase = migration.MigrationPhase
C = names.ConditionType
S = names.ConditionStatus
Warn = plan.EventType.WARNING
Info = plan.EventType.NORMAL

# A migration step that ends sooner than this gets no taskState write of its own: with fast
# steps the next phase supersedes it, and each write would wake every watcher for nothing.
PROGRESS_SECONDS = 1.0
# A confirm or a revert waits for a node's agent; look again this often, so a node that
# went silent meanwhile is noticed (a silent node sends no event).
NODE_RECHECK_SECONDS = 5.0
_IN_FLIGHT = (None, MPhase.PRE_MIGRATING, MPhase.MIGRATING, MPhase.POST_MIGRATING)


def decide(obs: Observed, mig: migration.Migration) -> plan.Plan:
    d = Draft(obs.instance, obs.now)
    spec, phase = mig.spec, mig.status.phase
    row = stages.stage(mig)
    d.ensure_finalizer()
    if is_active(mig):
        d.field("migrationRef", mig.metadata.name)
        d.field("previousFlavor", spec.old_flavor)
        d.label(names.LABEL_SOURCE_NODE, spec.source_node)
        d.label(names.LABEL_DEST_NODE, spec.dest_node)
    if phase in _IN_FLIGHT:
        _scheduled(obs, d, mig)
        wait = _show_task(obs, d, mig, row.shows, stages.task(mig))
        _refuse_actions(d, "the migration has not finished yet")
        change = (
            plan.PhaseChange(mig.metadata.name, None, MPhase.PRE_MIGRATING)
            if phase is None
            else None
        )
        return d.plan(migration_phase=change, requeue_after=wait)
    if phase is MPhase.FINISHED:
        return _verify(obs, d, mig)
    if phase is MPhase.CONFIRMING:
        _landed(d, mig)
        wait = _show_task(obs, d, mig, row.shows, row.task)
        # The confirm annotation stays until the migration is confirmed: it goes with the
        # label changes then, in one write (and a failed confirm is retried from it).
        _settle_action(d, names.ResizeAction.CONFIRM, "a confirm is in progress", keep=True)
        if spec.source_node not in obs.hosts_up:
            return _confirm_without_source(obs, d, mig)
        return d.plan(requeue_after=min(wait or NODE_RECHECK_SECONDS, NODE_RECHECK_SECONDS))
    if phase is MPhase.REVERTING:
        d.phase(row.shows, row.task)
        _settle_action(d, names.ResizeAction.REVERT, "a revert is in progress")
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)
        _revert_waits(obs, d, mig)
        return d.plan(requeue_after=NODE_RECHECK_SECONDS)
    return _ended(obs, d, mig)


LIVE_IMPOSSIBLE = "LiveResizeImpossible"  # resizePolicy Live, and a live resize cannot be
# ResizeFailed reasons that mean "waiting to be scheduled": over once a migration runs.
WAITING_REASONS = frozenset({"NoValidHost", LIVE_IMPOSSIBLE})


def _scheduled(obs: Observed, d: Draft, mig: migration.Migration) -> None:
    """A resize that waited for a host and now moves is not failing: whichever write the
    scheduling reconcile raced with (a NoValidHost decided on an older view), the
    condition ends False while its migration is in flight."""
    failed = conditions.find(obs.instance.status.conditions, C.RESIZE_FAILED.value)
    if failed is not None and failed.status is S.TRUE and failed.reason in WAITING_REASONS:
        d.condition(C.RESIZE_FAILED, S.FALSE, "Scheduled", f"scheduled to {mig.spec.dest_node}")


def _since(obs: Observed, node: str) -> str:
    seen = obs.last_seen.get(node)
    return f"since {seen.isoformat(timespec='seconds')}" if seen else "and has never reported"


def _confirm_without_source(obs: Observed, d: Draft, mig: migration.Migration) -> plan.Plan:
    """Nova bug 1855927: a confirm whose source is down waited for ever and held the old
    claim. The source's copy is not the truth any more (from `finished` on, the new one
    is): the controller confirms on its side, and the source removes its copy when it
    comes back (stage CONFIRMED, its agent's duty)."""
    source = mig.spec.source_node
    message = (
        f"node {source}, the source of migration {mig.metadata.name}, has been down "
        f"{_since(obs, source)}: the confirm completes without it, releasing "
        f"{mig.spec.old_flavor.name} there; its agent removes its copy when it returns"
    )
    d.event(Warn, "ConfirmedWithoutSource", message)
    seen = obs.last_seen.get(source)
    return d.plan(
        migration_phase=plan.PhaseChange(
            mig.metadata.name,
            MPhase.CONFIRMING,
            MPhase.CONFIRMED,
            status={"sourceDownSince": (seen or obs.now).isoformat()},
        )
    )


def _revert_waits(obs: Observed, d: Draft, mig: migration.Migration) -> None:
    """A revert never completes without the destination: its copy must be gone before the
    original starts (the guest must never run twice). Say so while its node is down."""
    dest = mig.spec.dest_node
    waiting = (
        mig.spec.source_node != dest and not mig.status.dest_released and dest not in obs.hosts_up
    )
    if waiting:
        message = (
            f"the revert of migration {mig.metadata.name} waits for node {dest}, down "
            f"{_since(obs, dest)}: its copy must be stopped before the original starts on "
            f"{mig.spec.source_node} (never two guests)"
        )
        if d.condition(C.NODE_DOWN, S.TRUE, "DestinationDown", message):
            d.event(Warn, "DestinationDown", message)
    elif conditions.is_true(obs.instance.status.conditions, C.NODE_DOWN.value):
        d.condition(C.NODE_DOWN, S.FALSE, "NodeUp", f"node {dest} answers again")


def _show_task(
    obs: Observed, d: Draft, mig: migration.Migration, phase: Phase, task: TaskState
) -> float | None:
    """Show the migration's step as taskState once it has lasted PROGRESS_SECONDS (or at
    once when the phase itself changes); returns when to look again, if waiting."""
    st = obs.instance.status
    if st.phase is not phase or (st.task_state or TaskState.NONE) is task:
        d.phase(phase, task)
        return None
    since = entered(mig, mig.status.phase) if mig.status.phase else None
    lasted = (obs.now - since).total_seconds() if since else PROGRESS_SECONDS
    if lasted >= PROGRESS_SECONDS:
        d.phase(phase, task)
        return None
    return PROGRESS_SECONDS - max(0.0, lasted)


def _settle_action(d: Draft, done: names.ResizeAction, why: str, *, keep: bool = False) -> None:
    """The annotation of the action under way is dropped silently (or kept, if `keep`);
    any other is refused."""
    _refuse_actions(d, why, expected=done, keep=keep)


def _refuse_actions(
    d: Draft, why: str, expected: names.ResizeAction | None = None, *, keep: bool = False
) -> None:
    action = d.inst.metadata.annotations.get(names.ANNOTATION_RESIZE)
    if expected is not None and action == expected.value:
        if not keep:
            d.drop_annotation(names.ANNOTATION_RESIZE)
    elif action is not None:
        d.drop_annotation(names.ANNOTATION_RESIZE)
        d.event(Warn, "InvalidAction", f"{names.ANNOTATION_RESIZE}={action} ignored: {why}")
    if names.ANNOTATION_MIGRATE in d.inst.metadata.annotations:
        d.drop_annotation(names.ANNOTATION_MIGRATE)
        d.event(Warn, "InvalidAction", f"{names.ANNOTATION_MIGRATE} ignored: {why}")


def _landed(d: Draft, mig: migration.Migration, *, final: bool = False) -> None:
    """Point status at the copy that is the truth; once the migration is over (`final`),
    the node label too. Until then the source-node and dest-node labels select the
    instance on both nodes, so moving the label earlier would cost a write and change
    nothing."""
    new = stages.truth(mig) is stages.Copy.NEW
    node = stages.node_of_truth(mig)
    d.field("node", node)
    d.field("flavor", mig.spec.new_flavor if new else mig.spec.old_flavor)
    if final:
        d.label(names.LABEL_NODE, node)


def entered(mig: migration.Migration, phase: MPhase) -> datetime.datetime | None:
    """When the migration last entered `phase` (its own record of transitions)."""
    return next((t.time for t in reversed(mig.status.phase_transitions) if t.phase is phase), None)


def _verify(obs: Observed, d: Draft, mig: migration.Migration) -> plan.Plan:
    inst, spec = obs.instance, mig.spec
    _landed(d, mig)
    failures = stages.confirm_failures(mig)
    if inst.status.phase is not Phase.VERIFY_RESIZE and not failures:
        d.event(
            Info,
            "VerifyResize",
            f"running {spec.new_flavor.name} on {spec.dest_node}: confirm or revert with "
            f"the annotation {names.ANNOTATION_RESIZE}=confirm|revert",
        )
    d.phase(Phase.VERIFY_RESIZE)
    d.condition(
        C.READY,
        S.TRUE if spec.power_on else S.FALSE,
        "VerifyResize",
        "waiting for confirm or revert",
    )
    finished_at = entered(mig, MPhase.FINISHED)
    if failures:
        message = (
            f"confirm of migration {mig.metadata.name} failed on {spec.source_node}: "
            f"{mig.status.message or 'no detail'}; the revert point is kept, the confirm "
            "is retried (or revert)"
        )
        if d.condition(C.CONFIRM_FAILED, S.TRUE, "ConfirmFailed", message):
            d.event(Warn, "ConfirmFailed", message)
    action = inst.metadata.annotations.get(names.ANNOTATION_RESIZE)
    if action != names.ResizeAction.CONFIRM:  # a confirm's stays until it is done
        d.drop_annotation(names.ANNOTATION_RESIZE)
    d.drop_annotation(names.ANNOTATION_MIGRATE)
    wants_old = (
        spec.type is migration.MigrationType.RESIZE
        and inst.spec.flavor == spec.old_flavor.name != spec.new_flavor.name
    )
    if action == names.ResizeAction.REVERT or wants_old:
        d.phase(Phase.REVERT_RESIZE, TaskState.RESIZE_REVERTING)
        # Not Ready while the copy stops and the original starts; Ready again when the
        # revert ends is a new transition: the original's report from before the move (a
        # stopped guest) no longer passes for now (found in CI: StoppedByGuest after it).
        if conditions.is_true(inst.status.conditions, C.READY.value):
            d.condition(C.READY, S.FALSE, "Reverting", f"the original starts on {spec.source_node}")
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)
        d.event(Info, "RevertResize", f"reverting to {spec.old_flavor.name} on {spec.source_node}")
        return d.plan(
            migration_phase=plan.PhaseChange(mig.metadata.name, MPhase.FINISHED, MPhase.REVERTING)
        )
    window = obs.settings.confirm_window_seconds
    due = finished_at + datetime.timedelta(seconds=window) if window > 0 and finished_at else None
    if failures and finished_at is not None and (action == names.ResizeAction.CONFIRM or due):
        # A confirm that failed is retried with capped backoff, while it is still wanted.
        retry = finished_at + datetime.timedelta(seconds=backoff(obs.settings, failures))
        if obs.now < retry:
            return d.plan(requeue_after=(retry - obs.now).total_seconds())
        d.event(
            Info,
            "ConfirmResize",
            f"confirm retried (attempt {failures + 1}): releasing {spec.old_flavor.name} on "
            f"{spec.source_node}",
        )
        return d.plan(
            migration_phase=plan.PhaseChange(mig.metadata.name, MPhase.FINISHED, MPhase.CONFIRMING)
        )
    if action == names.ResizeAction.CONFIRM or (due is not None and obs.now >= due):
        how = "confirmed" if action else f"auto-confirmed after {window:g}s"
        d.event(
            Info, "ConfirmResize", f"{how}: releasing {spec.old_flavor.name} on {spec.source_node}"
        )
        return d.plan(
            migration_phase=plan.PhaseChange(mig.metadata.name, MPhase.FINISHED, MPhase.CONFIRMING)
        )
    if action is not None:
        d.event(
            Warn,
            "InvalidAction",
            f"{names.ANNOTATION_RESIZE}={action} ignored: use confirm or revert",
        )
    if due is not None:
        return d.plan(requeue_after=max(0.0, (due - obs.now).total_seconds()))
    return d.plan()


def _ended(obs: Observed, d: Draft, mig: migration.Migration) -> plan.Plan:
    """The migration is over; finish the instance. Spec and annotations (main) are written
    before status, so a revert's spec.flavor lands while status.previousFlavor allows it."""
    spec, phase = mig.spec, mig.status.phase
    d.field("migrationRef", None)
    d.field("previousFlavor", None)
    d.label(names.LABEL_SOURCE_NODE, None)
    d.label(names.LABEL_DEST_NODE, None)
    power = instance.PowerState.RUNNING if spec.power_on else instance.PowerState.STOPPED
    if conditions.find(obs.instance.status.conditions, C.CONFIRM_FAILED.value):
        d.condition(C.CONFIRM_FAILED, S.FALSE, "Settled", f"migration {mig.metadata.name} ended")
    if mig.status.source_down_since is not None and phase is MPhase.CONFIRMED:
        d.condition(
            C.NODE_DOWN,
            S.FALSE,
            "ConfirmedWithoutSource",
            f"confirmed while {spec.source_node} was down (since "
            f"{mig.status.source_down_since.isoformat(timespec='seconds')}); it removes its "
            "copy when it returns",
        )
    elif conditions.is_true(obs.instance.status.conditions, C.NODE_DOWN.value):
        d.condition(C.NODE_DOWN, S.FALSE, "NodeUp", f"migration {mig.metadata.name} ended")
    if phase is MPhase.CONFIRMED:
        _settle_action(d, names.ResizeAction.CONFIRM, "the migration is confirmed")
        _landed(d, mig, final=True)
        settle_power(d, power)
        d.event(Info, "ResizeConfirmed", f"{spec.new_flavor.name} on {spec.dest_node}")
        return d.plan()
    if phase is MPhase.REVERTED:
        _landed(d, mig, final=True)
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)  # still allowed: previousFlavor is set until now
        _settle_action(d, names.ResizeAction.REVERT, "the migration is reverted")
        settle_power(d, power)
        d.event(Info, "ResizeReverted", f"{spec.old_flavor.name} on {spec.source_node}")
        return d.plan()
    # error: the instance runs from the copy that is the truth (the stage table says which).
    _landed(d, mig, final=True)
    if stages.truth(mig) is stages.Copy.ORIGINAL and spec.type is migration.MigrationType.RESIZE:
        d.set_flavor(spec.old_flavor.name)  # allowed: previousFlavor is still set until this lands
    d.phase(Phase.ERROR)
    message = f"migration {mig.metadata.name} failed: {mig.status.message or 'no detail'}"
    if d.condition(C.RESIZE_FAILED, S.TRUE, "MigrationFailed", message):
        d.event(Warn, "MigrationFailed", message)
    d.condition(C.READY, S.FALSE, "MigrationFailed", "waiting for the node to report the guest")
    return d.plan()
