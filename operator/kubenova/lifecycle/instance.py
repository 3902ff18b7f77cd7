"""decide(): from an observed Instance (and its Migration) to the Plan that moves it on.

Level-triggered: the same function serves create, update, resume and timers; it
re-derives everything from the objects, never from what happened before. Pure: the
clock arrives as `now`, placements as the scheduler's Decision.
"""

from __future__ import annotations

import dataclasses
import datetime

from kubenova.api import common, flavor, instance, migration, names
from kubenova.lifecycle import conditions, plan
from kubenova.lifecycle.draft import Draft
from kubenova.scheduling import amounts, scheduler

Phase = instance.Phase
TaskState = instance.TaskState
MPhase = migration.MigrationPhase
C = names.ConditionType
S = names.ConditionStatus
Warn = plan.EventType.WARNING
Info = plan.EventType.NORMAL

FLAVOR_RECHECK_SECONDS = 30.0  # a missing flavor may be created; look again this often
# A migration step that ends sooner than this gets no taskState write of its own: with fast
# steps the next phase supersedes it, and each write would wake every watcher for nothing.
PROGRESS_SECONDS = 1.0
DELETE_RECHECK_SECONDS = 10.0  # a node may go down while we wait for its agent


@dataclasses.dataclass(frozen=True)
class Settings:
    confirm_window_seconds: float = 0.0  # 0: never auto-confirm
    allow_resize_to_same_host: bool = True
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
    hosts_up: frozenset[str] = frozenset()


def amount(snapshot: common.FlavorSnapshot) -> amounts.Amount:
    return amounts.Amount(snapshot.vcpus, snapshot.memory_mib, snapshot.disk_gib)


def snapshot(name: str, spec: flavor.FlavorSpec) -> common.FlavorSnapshot:
    return common.FlavorSnapshot(
        name=name, vcpus=spec.vcpus, memory_mib=spec.memory_mib, disk_gib=spec.disk_gib
    )


def is_active(mig: migration.Migration) -> bool:
    return mig.status.phase not in migration.FINAL_PHASES


def decide(obs: Observed, placement: scheduler.Decision | None = None) -> plan.Plan:
    inst = obs.instance
    if inst.metadata.deletion_timestamp is not None:
        return _deleting(obs)
    mig = obs.migration
    if mig is not None and (is_active(mig) or inst.status.migration_ref == mig.metadata.name):
        return _migrating(obs, mig)
    if inst.status.node is None:
        return _build(obs, placement)
    if inst.status.phase in (None, Phase.BUILD):
        return _spawning(obs)
    return _steady(obs, placement)


# --- flavor validation (the webhook refuses these first; this catches a bypassed webhook) --


def _flavor_problem(obs: Observed, current: common.FlavorSnapshot | None) -> tuple[str, str] | None:
    name = obs.instance.spec.flavor
    if obs.flavor is None:
        return "FlavorNotFound", f"flavor {name} does not exist"
    if obs.flavor.disabled:
        return "FlavorDisabled", f"flavor {name} is disabled"
    if current is not None and obs.flavor.disk_gib < current.disk_gib:
        return "DiskShrink", (
            f"flavor {name} has a {obs.flavor.disk_gib} GiB disk, smaller than the current "
            f"{current.disk_gib} GiB ({current.name}): disks never shrink"
        )
    return None


def _check_flavor(obs: Observed, d: Draft, current: common.FlavorSnapshot | None) -> bool:
    problem = _flavor_problem(obs, current)
    if problem is None:
        d.condition(C.FLAVOR_VALID, S.TRUE, "FlavorValid", f"flavor {obs.instance.spec.flavor}")
        return True
    reason, message = problem
    if d.condition(C.FLAVOR_VALID, S.FALSE, reason, message):
        d.event(Warn, reason, message)
    return False


def _retry_after(obs: Observed, type_: names.ConditionType) -> float:
    """Capped backoff from how long the failure has lasted: no attempt counter to store."""
    found = conditions.find(obs.instance.status.conditions, type_.value)
    elapsed = (obs.now - found.last_transition_time).total_seconds() if found else 0.0
    s = obs.settings
    return min(s.retry_cap_seconds, max(s.retry_base_seconds, elapsed))


def _no_valid_host(obs: Observed, d: Draft, type_: names.ConditionType, message: str) -> plan.Plan:
    if d.condition(type_, S.TRUE if type_ is C.RESIZE_FAILED else S.FALSE, "NoValidHost", message):
        d.event(Warn, "NoValidHost", message)
    return d.plan(requeue_after=_retry_after(obs, type_))


# --- build ---------------------------------------------------------------------------------


def _build(obs: Observed, placement: scheduler.Decision | None) -> plan.Plan:
    inst, d = obs.instance, Draft(obs.instance, obs.now)
    d.phase(Phase.BUILD, TaskState.SCHEDULING)
    if not _check_flavor(obs, d, None):
        return d.plan(requeue_after=FLAVOR_RECHECK_SECONDS)
    assert obs.flavor is not None
    if placement is None:
        return plan.Plan(
            need_placement=scheduler.Request(
                flavor=amounts.Amount(obs.flavor.vcpus, obs.flavor.memory_mib, obs.flavor.disk_gib),
                node_selector=tuple(sorted(inst.spec.node_selector.items())),
            )
        )
    if placement.node is None:
        return _no_valid_host(obs, d, C.SCHEDULED, placement.message)
    d.phase(Phase.BUILD, TaskState.SPAWNING)
    d.field("node", placement.node)
    d.field("flavor", snapshot(inst.spec.flavor, obs.flavor))
    d.field("uuid", inst.metadata.uid)
    d.condition(C.SCHEDULED, S.TRUE, "Scheduled", f"placed on {placement.node}")
    d.condition(C.READY, S.FALSE, "Spawning", "waiting for the node's agent to spawn the guest")
    d.label(names.LABEL_NODE, placement.node)
    d.ensure_finalizer()
    d.event(Info, "Scheduled", f"placed on {placement.node}")
    return d.plan()


def _spawning(obs: Observed) -> plan.Plan:
    inst, d = obs.instance, Draft(obs.instance, obs.now)
    d.label(names.LABEL_NODE, inst.status.node)
    d.ensure_finalizer()
    host = inst.status.host
    if host is not None:
        _settle_power(d, host.power_state)
        d.event(Info, "Spawned", f"guest {host.power_state.value.lower()} on {inst.status.node}")
    return d.plan()


def _settle_power(d: Draft, actual: instance.PowerState) -> None:
    running = actual is instance.PowerState.RUNNING
    d.phase(Phase.ACTIVE if running else Phase.SHUTOFF)
    if running:
        d.condition(C.READY, S.TRUE, "Running", "the guest is running")
    else:
        d.condition(C.READY, S.FALSE, "Stopped", "the guest is powered off")


# --- steady state: ACTIVE, SHUTOFF, ERROR ---------------------------------------------------


def _steady(obs: Observed, placement: scheduler.Decision | None) -> plan.Plan:
    inst, d = obs.instance, Draft(obs.instance, obs.now)
    st = inst.status
    d.label(names.LABEL_NODE, st.node)
    d.label(names.LABEL_SOURCE_NODE, None)
    d.label(names.LABEL_DEST_NODE, None)
    d.ensure_finalizer()
    action = inst.metadata.annotations.get(names.ANNOTATION_RESIZE)
    if action is not None:
        d.drop_annotation(names.ANNOTATION_RESIZE)
        d.event(
            Warn,
            "InvalidAction",
            f"{names.ANNOTATION_RESIZE}={action} ignored: confirm and revert apply only "
            f"in VERIFY_RESIZE, the instance is {st.phase}",
        )

    host = st.host
    if st.phase not in (Phase.RESIZE, Phase.VERIFY_RESIZE, Phase.REVERT_RESIZE):
        d.field("migrationRef", None)
        d.field("previousFlavor", None)
    if st.phase in (Phase.RESIZE, Phase.VERIFY_RESIZE, Phase.REVERT_RESIZE):
        # The Migration driving this phase is gone (deleted by hand): stop pretending.
        message = f"migration {st.migration_ref} of this {st.phase.value} no longer exists"
        d.phase(Phase.ERROR)
        if d.condition(C.RESIZE_FAILED, S.TRUE, "MigrationMissing", message):
            d.event(Warn, "MigrationMissing", message)
        return d.plan()
    if st.phase is Phase.ERROR:
        # A failed resize was rolled back: ERROR until the node reports the original running.
        if host is not None and _reported_since_failure(inst):
            _settle_power(d, host.power_state)
        return d.plan()

    desired = inst.spec.power_state
    settled = host is not None and host.power_state is desired
    if not settled:
        task = (
            TaskState.POWERING_ON
            if desired is instance.PowerState.RUNNING
            else TaskState.POWERING_OFF
        )
        d.phase(st.phase or Phase.ACTIVE, task)
        return d.plan()
    assert host is not None
    _settle_power(d, host.power_state)

    target = inst.metadata.annotations.get(names.ANNOTATION_MIGRATE)
    if target is not None:
        return _start_move(obs, d, placement, target=target or None)
    if st.flavor is not None and inst.spec.flavor != st.flavor.name:
        return _start_move(obs, d, placement, target=None)
    waiting = conditions.find(st.conditions, C.RESIZE_FAILED.value)
    if waiting and waiting.status is S.TRUE and waiting.reason == "NoValidHost":
        # Only a resize still waiting for a host is cancelled by setting the flavor back;
        # a failed one stays reported until the next resize succeeds.
        d.condition(
            C.RESIZE_FAILED,
            S.FALSE,
            "Cancelled",
            f"spec.flavor is {st.flavor and st.flavor.name} again",
        )
    if st.flavor is not None and obs.flavor is not None:
        d.condition(C.FLAVOR_VALID, S.TRUE, "FlavorValid", f"flavor {inst.spec.flavor}")
    return d.plan()


def _reported_since_failure(inst: instance.Instance) -> bool:
    failed = conditions.find(inst.status.conditions, C.RESIZE_FAILED.value)
    host = inst.status.host
    return host is not None and (failed is None or host.observed_at >= failed.last_transition_time)


def _start_move(
    obs: Observed, d: Draft, placement: scheduler.Decision | None, *, target: str | None
) -> plan.Plan:
    """Schedule a resize (spec.flavor changed) or a cold migrate (annotation)."""
    inst, st = obs.instance, obs.instance.status
    assert st.flavor is not None
    assert st.node is not None
    is_migrate = names.ANNOTATION_MIGRATE in inst.metadata.annotations
    if is_migrate:
        new = st.flavor
    else:
        if not _check_flavor(obs, d, st.flavor):
            return d.plan(requeue_after=FLAVOR_RECHECK_SECONDS)
        assert obs.flavor is not None
        new = snapshot(inst.spec.flavor, obs.flavor)
    if placement is None:
        return plan.Plan(
            need_placement=scheduler.Request(
                flavor=amount(new),
                node_selector=tuple(sorted(inst.spec.node_selector.items())),
                source=st.node,
                source_flavor=amount(st.flavor),
                allow_same_host=not is_migrate and obs.settings.allow_resize_to_same_host,
                only=target,
            )
        )
    if placement.node is None:
        if is_migrate:  # a one-shot request: report, drop the annotation, do not retry
            d.drop_annotation(names.ANNOTATION_MIGRATE)
            d.condition(C.MIGRATE_FAILED, S.TRUE, "NoValidHost", placement.message)
            d.event(Warn, "NoValidHost", "migrate: " + placement.message)
            return d.plan()
        return _no_valid_host(obs, d, C.RESIZE_FAILED, placement.message)
    kind = migration.MigrationType.MIGRATION if is_migrate else migration.MigrationType.RESIZE
    order = plan.MigrationOrder(
        name=f"{inst.metadata.name}-",
        spec=migration.MigrationSpec(
            instance_name=inst.metadata.name,
            instance_uuid=st.uuid or inst.metadata.uid,
            type=kind,
            source_node=st.node,
            dest_node=placement.node,
            old_flavor=st.flavor,
            new_flavor=new,
            power_on=inst.spec.power_state is instance.PowerState.RUNNING,
        ),
        labels={
            names.LABEL_INSTANCE: inst.metadata.name,
            names.LABEL_SOURCE_NODE: st.node,
            names.LABEL_DEST_NODE: placement.node,
        },
    )
    d.drop_annotation(names.ANNOTATION_MIGRATE)
    d.label(names.LABEL_SOURCE_NODE, st.node)
    d.label(names.LABEL_DEST_NODE, placement.node)
    d.phase(Phase.RESIZE, TaskState.RESIZE_PREP)
    d.field("previousFlavor", st.flavor)
    failed = C.MIGRATE_FAILED if is_migrate else C.RESIZE_FAILED
    if conditions.find(st.conditions, failed.value):
        d.condition(failed, S.FALSE, "Scheduled", placement.message)
    where = "same host" if placement.node == st.node else f"{st.node} -> {placement.node}"
    verb = "migrating" if is_migrate else f"resizing {st.flavor.name} -> {new.name}"
    d.event(Info, "MigrationScheduled" if is_migrate else "ResizeScheduled", f"{verb} ({where})")
    return d.plan(create_migration=order)


# --- a migration in flight or just ended -----------------------------------------------------

_TASK = {
    None: TaskState.RESIZE_PREP,
    MPhase.PRE_MIGRATING: TaskState.RESIZE_PREP,
    MPhase.MIGRATING: TaskState.RESIZE_MIGRATING,
    MPhase.POST_MIGRATING: TaskState.RESIZE_FINISH,
}


def _migrating(obs: Observed, mig: migration.Migration) -> plan.Plan:
    d = Draft(obs.instance, obs.now)
    spec, phase = mig.spec, mig.status.phase
    d.ensure_finalizer()
    if is_active(mig):
        d.field("migrationRef", mig.metadata.name)
        d.field("previousFlavor", spec.old_flavor)
        d.label(names.LABEL_SOURCE_NODE, spec.source_node)
        d.label(names.LABEL_DEST_NODE, spec.dest_node)
    if phase in _TASK:
        wait = _show_task(obs, d, mig, Phase.RESIZE, _TASK[phase])
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
        _landed(d, mig, dest=True)
        wait = _show_task(obs, d, mig, Phase.VERIFY_RESIZE, TaskState.RESIZE_CONFIRMING)
        # The confirm annotation stays until the migration is confirmed: it goes with the
        # label changes then, in one write.
        _settle_action(d, names.ResizeAction.CONFIRM, "a confirm is in progress", keep=True)
        return d.plan(requeue_after=wait)
    if phase is MPhase.REVERTING:
        d.phase(Phase.REVERT_RESIZE, TaskState.RESIZE_REVERTING)
        _settle_action(d, names.ResizeAction.REVERT, "a revert is in progress")
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)
        return d.plan()
    return _ended(obs, d, mig)


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


def _landed(d: Draft, mig: migration.Migration, *, dest: bool, final: bool = False) -> None:
    """Point status at where the guest runs now; once the migration is over (`final`), the
    node label too. Until then the source-node and dest-node labels select the instance on
    both nodes, so moving the label earlier would cost a write and change nothing."""
    node = mig.spec.dest_node if dest else mig.spec.source_node
    d.field("node", node)
    d.field("flavor", mig.spec.new_flavor if dest else mig.spec.old_flavor)
    if final:
        d.label(names.LABEL_NODE, node)


def entered(mig: migration.Migration, phase: MPhase) -> datetime.datetime | None:
    """When the migration last entered `phase` (its own record of transitions)."""
    return next((t.time for t in reversed(mig.status.phase_transitions) if t.phase is phase), None)


def _verify(obs: Observed, d: Draft, mig: migration.Migration) -> plan.Plan:
    inst, spec = obs.instance, mig.spec
    _landed(d, mig, dest=True)
    if inst.status.phase is not Phase.VERIFY_RESIZE:
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
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)
        d.event(Info, "RevertResize", f"reverting to {spec.old_flavor.name} on {spec.source_node}")
        return d.plan(
            migration_phase=plan.PhaseChange(mig.metadata.name, MPhase.FINISHED, MPhase.REVERTING)
        )
    window = obs.settings.confirm_window_seconds
    done = entered(mig, MPhase.FINISHED)
    due = done + datetime.timedelta(seconds=window) if window > 0 and done else None
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
    running = spec.power_on
    if phase is MPhase.CONFIRMED:
        _settle_action(d, names.ResizeAction.CONFIRM, "the migration is confirmed")
        _landed(d, mig, dest=True, final=True)
        _settle_power(d, instance.PowerState.RUNNING if running else instance.PowerState.STOPPED)
        d.event(Info, "ResizeConfirmed", f"{spec.new_flavor.name} on {spec.dest_node}")
        return d.plan()
    if phase is MPhase.REVERTED:
        _landed(d, mig, dest=False, final=True)
        if spec.type is migration.MigrationType.RESIZE:
            d.set_flavor(spec.old_flavor.name)  # still allowed: previousFlavor is set until now
        _settle_action(d, names.ResizeAction.REVERT, "the migration is reverted")
        _settle_power(d, instance.PowerState.RUNNING if running else instance.PowerState.STOPPED)
        d.event(Info, "ResizeReverted", f"{spec.old_flavor.name} on {spec.source_node}")
        return d.plan()
    # error: the agents keep the original; before `finished` it is still on the source.
    entered = [t.phase for t in mig.status.phase_transitions]
    on_dest = MPhase.FINISHED in entered and MPhase.REVERTING not in entered
    _landed(d, mig, dest=on_dest, final=True)
    if not on_dest and spec.type is migration.MigrationType.RESIZE:
        d.set_flavor(spec.old_flavor.name)  # allowed: previousFlavor is still set until this lands
    d.phase(Phase.ERROR)
    message = f"migration {mig.metadata.name} failed: {mig.status.message or 'no detail'}"
    if d.condition(C.RESIZE_FAILED, S.TRUE, "MigrationFailed", message):
        d.event(Warn, "MigrationFailed", message)
    d.condition(C.READY, S.FALSE, "MigrationFailed", "waiting for the node to report the guest")
    return d.plan()


# --- deletion ------------------------------------------------------------------------------


def _deleting(obs: Observed) -> plan.Plan:
    inst, d = obs.instance, Draft(obs.instance, obs.now)
    if names.FINALIZER not in inst.metadata.finalizers:
        return plan.NOTHING
    d.phase(Phase.DELETING, TaskState.DELETING)
    involved = {
        inst.status.node,
        inst.metadata.labels.get(names.LABEL_SOURCE_NODE),
        inst.metadata.labels.get(names.LABEL_DEST_NODE),
    }
    if obs.migration is not None and is_active(obs.migration):
        involved |= {obs.migration.spec.source_node, obs.migration.spec.dest_node}
    # A node that is down cannot answer; its agent removes leftovers when it comes back.
    waiting = sorted(
        n for n in involved if n and n in obs.hosts_up and n not in inst.status.released
    )
    if waiting:
        return d.plan(requeue_after=DELETE_RECHECK_SECONDS)
    return dataclasses.replace(d.plan(), remove_finalizer=True)
