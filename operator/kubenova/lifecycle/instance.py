"""decide(): from an observed Instance (and its Migration) to the Plan that moves it on.

Level-triggered: the same function serves create, update, resume and timers; it
re-derives everything from the objects, never from what happened before. Pure: the
clock arrives as `now`, placements as the scheduler's Decision.
"""

from __future__ import annotations

import dataclasses

from kubenova.api import common, instance, migration, names
from kubenova.lifecycle import conditions, live, moving, observed, plan
from kubenova.lifecycle.draft import Draft
from kubenova.lifecycle.observed import (
    Observed,
    Settings,
    amount,
    is_active,
    retry_after,
    settle_power,
    snapshot,
)
from kubenova.scheduling import amounts, scheduler

__all__ = ["Observed", "Settings", "decide", "entered"]
entered = moving.entered

Phase = instance.Phase
TaskState = instance.TaskState
MPhase = migration.MigrationPhase
C = names.ConditionType
S = names.ConditionStatus
Warn = plan.EventType.WARNING
Info = plan.EventType.NORMAL

FLAVOR_RECHECK_SECONDS = 30.0  # a missing flavor may be created; look again this often
DELETE_RECHECK_SECONDS = 10.0  # a node may go down while we wait for its agent


def decide(obs: Observed, placement: scheduler.Decision | None = None) -> plan.Plan:
    inst = obs.instance
    if inst.metadata.deletion_timestamp is not None:
        return _deleting(obs)
    mig = obs.migration
    if mig is not None and (is_active(mig) or inst.status.migration_ref == mig.metadata.name):
        return moving.decide(obs, mig)
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


def _no_valid_host(
    obs: Observed, d: Draft, type_: names.ConditionType, message: str, reason: str = "NoValidHost"
) -> plan.Plan:
    if d.condition(type_, S.TRUE if type_ is C.RESIZE_FAILED else S.FALSE, reason, message):
        d.event(Warn, reason, message)
    return d.plan(requeue_after=retry_after(obs, type_))


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
    host = inst.status.node_report()
    if host is not None:
        settle_power(d, host.power_state)
        d.event(Info, "Spawned", f"guest {host.power_state.value.lower()} on {inst.status.node}")
    return d.plan()


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

    host = st.node_report()
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
            settle_power(d, host.power_state)
        return d.plan()

    if _drifted(inst, d):
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
    _settle(inst, d, host)

    target = inst.metadata.annotations.get(names.ANNOTATION_MIGRATE)
    if target is not None:
        return _start_move(obs, d, placement, target=target or None)
    if st.flavor is not None and inst.spec.flavor != st.flavor.name:
        return _start_move(obs, d, placement, target=None)
    waiting = conditions.find(st.conditions, C.RESIZE_FAILED.value)
    if waiting and waiting.status is S.TRUE and waiting.reason in _WAITING_REASONS:
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


# A resize that waits (retried with backoff) for one of these; spec.flavor set back cancels.
LIVE_IMPOSSIBLE = moving.LIVE_IMPOSSIBLE
_WAITING_REASONS = moving.WAITING_REASONS


def _live_case(obs: Observed, new: common.FlavorSnapshot, is_migrate: bool) -> live.Case:
    inst, st = obs.instance, obs.instance.status
    assert st.flavor is not None
    return live.Case(
        policy=inst.spec.resize_policy,
        migrate=is_migrate,
        enabled=obs.settings.live_resize,
        flavor_allows=obs.flavor is None or obs.flavor.allow_live_resize,
        same_host_allowed=obs.settings.allow_resize_to_same_host,
        old=st.flavor,
        new=new,
        host=st.node_report(),
    )


def _settle(inst: instance.Instance, d: Draft, host: instance.HostStatus) -> None:
    ready = conditions.find(inst.status.conditions, C.READY.value)
    if ready is not None and ready.reason == names.GUEST_MISSING:
        where = inst.status.node
        d.event(Info, "GuestRedefined", f"the guest is defined again on {where} from its disk")
    settle_power(d, host.power_state)


def _drifted(inst: instance.Instance, d: Draft) -> bool:
    """The guest changed outside kubenova: deleted (its disk kept), or stopped by itself.
    Recorded on `d`; True when that is all this reconcile does."""
    st, host = inst.status, inst.status.node_report()
    if host is not None and host.missing and not st.task_state:
        # Deleted outside kubenova (virsh undefine, kubectl delete vm): the disk is still on
        # the node. This condition is the agent's cue to define the guest again from it.
        message = (
            f"the guest on {st.node} was deleted outside kubenova (its domain or "
            "VirtualMachine is gone); its disk is kept there and the node's agent defines "
            "the guest again from it"
        )
        if d.condition(C.READY, S.FALSE, names.GUEST_MISSING, message):
            d.event(Warn, names.GUEST_MISSING, message)
        return True
    if _stopped_by_itself(inst):
        # Nova's power-state sync: a guest that shut down or crashed by itself is not
        # restarted behind the user's back; the instance is stopped, as Nova's stop API
        # would do, and starts again when the user sets spec.powerState back to Running.
        d.set_power(instance.PowerState.STOPPED)
        settle_power(d, instance.PowerState.STOPPED)
        d.event(
            Warn,
            "StoppedByGuest",
            f"the guest on {st.node} stopped by itself (shut down from inside, or crashed): "
            "spec.powerState is now Stopped; set it to Running to start it again",
        )
        return True
    return False


def _stopped_by_itself(inst: instance.Instance) -> bool:
    """ACTIVE and idle, the user wants it running, and the node reports it stopped, in a
    report made after the instance was last seen running (not a stale one)."""
    st, host = inst.status, inst.status.node_report()
    ready = conditions.find(st.conditions, C.READY.value)
    return (
        st.phase is Phase.ACTIVE
        and not st.task_state
        and inst.spec.power_state is instance.PowerState.RUNNING
        and host is not None
        and host.power_state is instance.PowerState.STOPPED
        and ready is not None
        and ready.status is S.TRUE
        and observed.reported_after(host, ready.last_transition_time)
    )


def _reported_since_failure(inst: instance.Instance) -> bool:
    failed = conditions.find(inst.status.conditions, C.RESIZE_FAILED.value)
    host = inst.status.node_report()
    return host is not None and (
        failed is None or observed.reported_after(host, failed.last_transition_time)
    )


def _pre_copies(obs: Observed, dest: str) -> bool:
    """Whether a move to `dest` sends the disk while the guest runs: another node, and a
    guest the node reports running (a stopped one's disk is stable: nothing to gain)."""
    st = obs.instance.status
    running = st.host is not None and st.host.power_state is instance.PowerState.RUNNING
    return obs.settings.pre_copy and dest != st.node and running


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
    choice = live.choose(_live_case(obs, new, is_migrate))
    if choice.refused:
        return _no_valid_host(obs, d, C.RESIZE_FAILED, choice.reason, LIVE_IMPOSSIBLE)
    stays = choice.mode is live.Mode.LIVE
    if placement is None:
        return plan.Plan(
            need_placement=scheduler.Request(
                flavor=amount(new),
                node_selector=tuple(sorted(inst.spec.node_selector.items())),
                source=st.node,
                source_flavor=amount(st.flavor),
                allow_same_host=not is_migrate and obs.settings.allow_resize_to_same_host,
                only=st.node if stays and inst.spec.resize_policy is live.Policy.LIVE else target,
                prefer=st.node if stays else None,
            )
        )
    if placement.node is None and stays and inst.spec.resize_policy is live.Policy.LIVE:
        message = f"live resize impossible: {placement.message} (a live resize stays on {st.node})"
        return _no_valid_host(obs, d, C.RESIZE_FAILED, message, LIVE_IMPOSSIBLE)
    if placement.node is None:
        if is_migrate:  # a one-shot request: report, drop the annotation, do not retry
            d.drop_annotation(names.ANNOTATION_MIGRATE)
            d.condition(C.MIGRATE_FAILED, S.TRUE, "NoValidHost", placement.message)
            d.event(Warn, "NoValidHost", "migrate: " + placement.message)
            return d.plan()
        return _no_valid_host(obs, d, C.RESIZE_FAILED, placement.message)
    choice = live.after_placement(choice, st.node, placement.node)
    kind = migration.MigrationType.MIGRATION if is_migrate else migration.MigrationType.RESIZE
    sequence = max(st.migration_count or 0, obs.last_migration) + 1
    order = plan.MigrationOrder(
        name=migration.name_for(inst.metadata.name, inst.metadata.uid, sequence),
        spec=migration.MigrationSpec(
            instance_name=inst.metadata.name,
            instance_uuid=st.uuid or inst.metadata.uid,
            type=kind,
            source_node=st.node,
            dest_node=placement.node,
            old_flavor=st.flavor,
            new_flavor=new,
            power_on=inst.spec.power_state is instance.PowerState.RUNNING,
            mode=choice.mode,
            mode_reason=choice.reason,
            pre_copy=_pre_copies(obs, placement.node),
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
    # Not Ready while it moves (a cold move powers the guest off), and Ready again from
    # VERIFY_RESIZE on: a new transition, so no report the node made before it (the
    # source's, of its stopped original) can pass for the state after the move.
    if conditions.is_true(st.conditions, C.READY.value):
        if choice.mode is live.Mode.LIVE:
            d.condition(C.READY, S.FALSE, "ResizingLive", "the guest runs on while it grows")
        else:
            d.condition(C.READY, S.FALSE, "Moving", f"the guest moves to {placement.node}")
    d.field("previousFlavor", st.flavor)
    d.field("migrationCount", sequence)
    failed = C.MIGRATE_FAILED if is_migrate else C.RESIZE_FAILED
    if conditions.find(st.conditions, failed.value):
        d.condition(failed, S.FALSE, "Scheduled", placement.message)
    where = "same host" if placement.node == st.node else f"{st.node} -> {placement.node}"
    verb = "migrating" if is_migrate else f"resizing {st.flavor.name} -> {new.name}"
    how = "" if is_migrate else f", {choice.mode.value}: {choice.reason}"
    d.event(
        Info,
        "MigrationScheduled" if is_migrate else "ResizeScheduled",
        f"{verb} ({where}{how})",
    )
    return d.plan(create_migration=order)


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
