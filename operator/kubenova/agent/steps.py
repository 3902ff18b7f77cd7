"""What one node does for one Instance: observe, decide (lifecycle/duties.py), act thinly.

The decisions are the stage table's (lifecycle/stages.py): which migration step is due on
this node, what a failure undoes, which copy is the truth. This module only runs the
driver call behind each duty and writes the phase that follows, as a compare-and-swap on
the phase the step started from; a crash at any point leaves a phase from which the same
step runs again (every driver step is idempotent, judged by the migration's markers).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import pathlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kubenova import clock, faults
from kubenova.agent import transfer
from kubenova.api import instance, migration
from kubenova.drivers import base
from kubenova.kube import objects
from kubenova.lifecycle import conditions, duties, moving, observed, stages
from kubenova.observability import logs, metrics
from kubenova.scheduling.amounts import Amount

if TYPE_CHECKING:
    from kubenova.agent.node import Node

log = logging.getLogger(__name__)
P = migration.MigrationPhase
Duty = stages.Duty
RESTORE_RETRY_SECONDS = 30.0  # an undo that failed (no phase to write) is tried again
TRANSFER_PROGRESS_SECONDS = 2.0  # status.transfer at most this often: a watch event each


def _amount(snap: Any) -> Amount:
    return Amount(snap.vcpus, snap.memory_mib, snap.disk_gib)


async def reconcile(node: Node, key: str) -> float | None:
    namespace, name = key.split("/", 1)
    inst = _instance(node, key)
    obs = duties.Observed(
        node=node.name, instance=inst, migrations=tuple(node.migrations_of(namespace, name))
    )
    if duties.act(obs) is duties.Act.RELEASE:
        assert inst is not None
        await _release(node, inst)
        return None
    retry = await _migration_steps(node, obs)
    inst = _instance(node, key)  # the steps' own writes are in the caches
    if inst is None:
        return retry
    info = await node.driver.get_info(_uuid(inst))
    obs = duties.Observed(
        node=node.name,
        instance=inst,
        migrations=tuple(node.migrations_of(namespace, name)),
        guest=_power(info) if info else None,
    )
    await _act(node, obs)
    if inst.status.node == node.name:
        await _report(node, _instance(node, key) or inst)
    return retry


def _instance(node: Node, key: str) -> instance.Instance | None:
    body = node.instance(key)
    if body is None:
        return None
    logs.bind_instance(body)
    return instance.Instance.model_validate(body)


def _uuid(inst: instance.Instance | None) -> str:
    assert inst is not None
    return inst.status.uuid or inst.metadata.uid


def _power(info: base.GuestInfo) -> instance.PowerState:
    return instance.PowerState(info.power.value)


# --- migration steps ---------------------------------------------------------------------------


async def _migration_steps(node: Node, obs: duties.Observed) -> float | None:
    """Run the due steps until none is left; each phase written re-decides (a same-host
    migration's source and destination steps alternate in this one loop)."""
    done: set[tuple[str, Duty, P | None]] = set()
    retry: float | None = None
    for _ in range(16):  # more steps than a migration has; ends when nothing moves
        due = [
            t
            for t in duties.tasks(obs)
            if (t.migration.metadata.uid, t.work.duty, t.migration.status.phase) not in done
        ]
        if not due:
            break
        task = due[0]
        mig = task.migration
        done.add((mig.metadata.uid, task.work.duty, mig.status.phase))
        try:
            moved = await _run(node, obs, task)
        except base.RetryLaterError as exc:
            delay = node.backoff(mig.metadata.uid)
            log.warning("migration %s: %s; trying again in %.0fs", mig.metadata.name, exc, delay)
            retry = delay if retry is None else min(retry, delay)
            continue
        except base.DriverError as exc:
            log.error("migration %s: %s failed: %s", mig.metadata.name, task.work.duty, exc)
            moved = await _failed(node, task, str(exc))
            if moved is None:
                retry = RESTORE_RETRY_SECONDS
        node.succeeded(mig.metadata.uid)
        if moved is not None:
            obs = dataclasses.replace(
                obs,
                migrations=tuple(
                    moved if m.metadata.uid == moved.metadata.uid else m for m in obs.migrations
                ),
            )
    return retry


@dataclasses.dataclass(frozen=True)
class _Step:
    """One duty's context: the task, the Instance as observed, and the driver's names."""

    node: Node
    task: duties.Task
    inst: instance.Instance | None

    @property
    def uid(self) -> str:
        return self.task.migration.metadata.uid

    @property
    def uuid(self) -> str:
        return self.task.migration.spec.instance_uuid

    @property
    def same(self) -> bool:
        return self.task.role is stages.Role.SAME_HOST

    def guest(self, flavor: Any) -> base.Guest:
        assert self.inst is not None
        return _guest(self.inst, flavor, self.uuid, self.task.migration.spec.power_on)


Extra = dict[str, Any]  # status fields a duty records with the phase write that follows it


async def _set_aside(s: _Step) -> Extra:
    assert s.inst is not None
    info = await s.node.driver.get_info(s.uuid)
    stopping = _now() if info is not None and info.power is base.Power.RUNNING else None
    await s.node.driver.migrate_disk_and_power_off(
        s.uuid, migration=s.uid, same_host=s.same, timeout=shutdown_timeout(s.node, s.inst)
    )
    faults.point("agent", "source-set-aside")
    # Downtime runs from the power-off request (the guest's services stop answering then);
    # a step repeated after a crash keeps the first attempt's time.
    return {"stoppedAt": stopping} if stopping and not s.task.migration.status.stopped_at else {}


async def _freeze_base(s: _Step) -> Extra:
    try:
        overlay = await s.node.driver.freeze_base(s.uuid, migration=s.uid)
    except base.DriverError as exc:
        log.warning("migration %s: no pre-copy: %s", s.task.migration.metadata.name, exc)
        return {"preCopy": {"base": migration.BaseState.SKIPPED.value, "baseMessage": str(exc)}}
    faults.point("agent", "base-frozen")
    return {"preCopy": {"base": migration.BaseState.OFFERED.value, "overlay": overlay}}


async def _pre_copy(s: _Step) -> Extra:
    """Receive the base while the guest runs. Never fails the migration: a pre-copy that
    cannot be done is abandoned, and the whole disk goes after power-off."""
    assert s.inst is not None
    mig = s.task.migration
    try:
        await _receive_disk(s.node, mig, _owner(s.inst), parts=(base.Part.DISK,))
    except base.DriverError as exc:
        log.warning("migration %s: pre-copy abandoned: %s", mig.metadata.name, exc)
        abandoned = migration.CopyState.ABANDONED.value
        return {"preCopy": {"copy": abandoned, "copyMessage": str(exc)}}
    return {"preCopy": {"copy": migration.CopyState.RECEIVED.value}}


async def _accept(s: _Step) -> Extra:
    return {}  # the destination takes the work order: the phase write is the whole step


async def _build(s: _Step) -> Extra:
    assert s.inst is not None
    mig = s.task.migration
    if not s.same:
        pre = mig.status.pre_copy
        delta = pre is not None and pre.overlay and pre.base is migration.BaseState.OFFERED
        parts = (base.Part.DISK, base.Part.DELTA) if delta else (base.Part.DISK,)
        await _receive_disk(s.node, mig, _owner(s.inst), parts=parts)
    guest = s.guest(mig.spec.new_flavor)
    await s.node.driver.finish_migration(guest, migration=s.uid, same_host=s.same)
    started = now()
    await _report(s.node, s.inst)  # before the phase: whoever sees VERIFY_RESIZE sees the copy
    faults.point("agent", "dest-finished")
    stopped = mig.status.stopped_at
    if not guest.power_on or stopped is None:
        return {}
    return {
        "startedAt": started.isoformat(),
        "downtimeSeconds": round(max(0.0, (started - stopped).total_seconds()), 3),
    }


async def _confirm(s: _Step) -> Extra:
    await s.node.driver.confirm_migration(s.uuid, migration=s.uid, same_host=s.same)
    faults.point("agent", "source-confirmed")
    return {}


async def _release_copy(s: _Step) -> Extra:
    if s.task.migration.status.phase is P.REVERTING:
        # Never two guests: the copy here stops before the original starts, whatever
        # its markers say (the release below removes it only if they name `mig`).
        info = await s.node.driver.get_info(s.uuid)
        if info is not None and info.power is base.Power.RUNNING:
            await s.node.driver.power_off(s.uuid, 0)
    await s.node.driver.release_migration(s.uuid, migration=s.uid)
    faults.point("agent", "dest-released")
    return {}


async def _restore(s: _Step) -> Extra:
    assert s.inst is not None
    guest = s.guest(s.task.migration.spec.old_flavor)
    await s.node.driver.finish_revert_migration(guest, migration=s.uid, same_host=s.same)
    await _report(s.node, s.inst)  # before the phase: whoever sees ACTIVE sees the original
    if s.task.work.to is not None:
        faults.point("agent", "source-reverted")
    return {}


async def _keep_running(s: _Step) -> Extra:
    faults.point("agent", "source-set-aside")  # live: nothing to power off or move
    return {}


async def _plug(s: _Step) -> Extra:
    assert s.inst is not None
    await s.node.driver.resize_live(s.guest(s.task.migration.spec.new_flavor), migration=s.uid)
    await _report(s.node, s.inst)  # before the phase, as a cold build
    faults.point("agent", "dest-finished")
    return {}


async def _unplug(s: _Step) -> Extra:
    assert s.inst is not None
    mig = s.task.migration
    reverted = await s.node.driver.revert_live(
        s.guest(mig.spec.old_flavor), migration=s.uid, timeout=shutdown_timeout(s.node, s.inst)
    )
    await _report(s.node, s.inst)
    how = migration.Mode.LIVE if reverted.live else migration.Mode.COLD
    log.info("migration %s: reverted %s: %s", mig.metadata.name, how.value, reverted.reason)
    if s.task.work.to is None:
        return {}  # the undo of a failed resize: no phase to write
    faults.point("agent", "source-reverted")
    return {"revertMode": how.value, "revertReason": reverted.reason}


DUTIES: dict[Duty, Callable[[_Step], Awaitable[Extra]]] = {
    Duty.SET_ASIDE: _set_aside,
    Duty.ACCEPT: _accept,
    Duty.BUILD: _build,
    Duty.CONFIRM: _confirm,
    Duty.RELEASE: _release_copy,
    Duty.RESTORE: _restore,
    Duty.KEEP_RUNNING: _keep_running,
    Duty.PLUG: _plug,
    Duty.UNPLUG: _unplug,
    Duty.FREEZE_BASE: _freeze_base,
    Duty.PRE_COPY: _pre_copy,
}


async def _run(node: Node, obs: duties.Observed, task: duties.Task) -> migration.Migration | None:
    mig, work = task.migration, task.work
    extra = await DUTIES[work.duty](_Step(node, task, obs.instance))
    if work.marks or (work.to is None and extra):
        # No phase to write: the duty's record (a flag, a pre-copy's progress) is its end.
        body = await node.objs.patch(
            objects.MIGRATION,
            mig.metadata.namespace,
            mig.metadata.name,
            {"status": {**({work.marks: True} if work.marks else {}), **extra}},
            status=True,
        )
        node.remember(body)
        return migration.Migration.model_validate(body)
    if work.to is None or mig.status.phase is None:
        return None
    return await _advance(node, mig, mig.status.phase, work.to, extra=extra)


async def _failed(node: Node, task: duties.Task, message: str) -> migration.Migration | None:
    """A failing duty takes the migration where the stage table says (a confirm back to
    finished, the rest to error); an undo has nowhere to go and is retried later."""
    mig, target = task.migration, task.work.on_failure
    phase = mig.status.phase
    if target is None or phase is None or migration.writer_of(phase, target) is None:
        return None
    return await _advance(node, mig, phase, target, message)


def shutdown_timeout(node: Node, inst: instance.Instance) -> float:
    """The Instance's own timeout if it sets one (0: hard power-off at once), else the
    agent's default (Nova's shutdown_timeout)."""
    own = inst.spec.shutdown_timeout_seconds
    return float(own) if own is not None else node.cfg.shutdown_timeout_seconds


async def _receive_disk(
    node: Node, mig: migration.Migration, owner: str, *, parts: tuple[base.Part, ...]
) -> None:
    """Pull `parts` from the source agent, in order, each unless it is already here."""
    uuid = mig.spec.instance_uuid
    for part in parts:
        dest = await node.driver.prepare_incoming(
            uuid, migration=mig.metadata.uid, owner=owner, part=part
        )
        if dest is not None:  # a driver that keeps no files never asks for the source
            await _pull(node, mig, await _source_endpoint(node, mig), part, dest)


async def _source_endpoint(node: Node, mig: migration.Migration) -> str:
    source = mig.spec.source_node
    hv = await node.objs.get(objects.HYPERVISOR, None, source)
    endpoint: str = (hv or {}).get("status", {}).get("agent", {}).get("transferEndpoint", "")
    if not endpoint:
        raise base.DriverError(
            f"source node {source} serves no disks (agent without --transfer-port)"
        )
    tls = node.transfer_client_tls
    if (tls is not None) != endpoint.startswith("https://"):
        raise base.DriverError(
            f"source node {source} serves disks at {endpoint}, and this node "
            + ("pulls over TLS only" if tls else "has no transfer CA (--transfer-ca-file)")
        )
    return endpoint


async def _pull(
    node: Node, mig: migration.Migration, endpoint: str, part: base.Part, dest: pathlib.Path
) -> None:
    source, ns, name = mig.spec.source_node, mig.metadata.namespace or "default", mig.metadata.name
    running = mig.status.phase in (None, P.PRE_MIGRATING)  # the guest still runs (pre-copy)
    progress = _Progress(node, mig, part, running=running)
    try:
        token = node.transfer_token(mig.metadata.uid)
        resumed, sent = await metrics.timed_step(
            "transfer_disk" if part is base.Part.DISK else "transfer_delta",
            node.driver.name,
            transfer.pull(
                f"{endpoint}/v1/migrations/{ns}/{name}/{part.value}",
                token,
                dest,
                tls=node.transfer_client_tls,
                node=source,
                progress=progress.saw,
            ),
        )
    except transfer.TransferError as exc:
        began = moving.entered(mig, P.PRE_MIGRATING if running else P.POST_MIGRATING)
        patient = began is None or (now() - began).total_seconds() < node.cfg.transfer_retry_seconds
        if exc.transient and patient:
            raise base.RetryLaterError(f"{part.value} transfer from {source}: {exc}") from exc
        raise base.DriverError(f"{part.value} transfer from {source} failed: {exc}") from exc
    finally:
        await progress.close()
    log.info(
        "migration %s: received %d bytes of %s data from %s%s",
        name,
        sent,
        part.value,
        source,
        f" (resumed at offset {resumed})" if resumed else "",
    )
    faults.point("agent", "disk-received" if part is base.Part.DISK else "delta-received")


class _Progress:
    """status.transfer, written at most every PROGRESS_SECONDS while a part arrives and
    once at its end (never from the transfer's own loop: a slow API must not stall it)."""

    def __init__(
        self, node: Node, mig: migration.Migration, part: base.Part, *, running: bool
    ) -> None:
        self.node, self.mig, self.part, self.running = node, mig, part, running
        before = mig.status.transfer
        # What earlier parts of this migration sent, while the guest ran and after.
        self.earlier = (before.bytes_while_running, before.bytes_after_stop) if before else (0, 0)
        self.seen = (0, 0)
        self.written = time.monotonic()
        self.pending: asyncio.Task[None] | None = None

    def saw(self, received: int, total: int) -> None:
        if self.running and received > transfer.HALF_SENT_MARK >= self.seen[0]:
            faults.point("agent", "pre-copy-receiving")  # a destination killed mid-pre-copy
        self.seen = (received, total)
        due = time.monotonic() - self.written >= TRANSFER_PROGRESS_SECONDS
        if due and (self.pending is None or self.pending.done()):
            self.written = time.monotonic()
            self.pending = asyncio.ensure_future(self._write())

    async def close(self) -> None:
        if self.pending is not None:
            with contextlib.suppress(Exception):
                await self.pending
        if self.seen[1]:
            await self._write()

    async def _write(self) -> None:
        received, total = self.seen
        running, stopped = self.earlier
        if self.running:
            running += received
        else:
            stopped += received
        status = {
            "part": self.part.value,
            "bytes": received,
            "totalBytes": total,
            "bytesWhileRunning": running,
            "bytesAfterStop": stopped,
        }
        try:
            await self.node.objs.patch(
                objects.MIGRATION,
                self.mig.metadata.namespace,
                self.mig.metadata.name,
                {"status": {"transfer": status}},
                status=True,
            )
        except Exception as exc:  # progress is informative: a failed write is not the step's
            log.debug("migration %s: progress not written: %s", self.mig.metadata.name, exc)


def _owner(inst: instance.Instance) -> str:
    return f"{inst.metadata.namespace}/{inst.metadata.name}"


def _guest(inst: instance.Instance, flavor: Any, uuid: str, power_on: bool) -> base.Guest:
    return base.Guest(
        uuid=uuid,
        flavor=_amount(flavor),
        image=inst.spec.image,
        power_on=power_on,
        name=_owner(inst),
    )


async def _advance(
    node: Node,
    mig: migration.Migration,
    old: P,
    new: P,
    message: str = "",
    *,
    extra: Extra | None = None,
) -> migration.Migration | None:
    """CAS the phase; None if someone else moved it first (the next event tells us)."""
    status = {"phase": new.value, **({"message": message} if message else {}), **(extra or {})}
    try:
        body = await node.objs.set_phase(
            objects.MIGRATION,
            mig.metadata.namespace,
            mig.metadata.name,
            expected=old.value,
            status=status,
            transition={"phase": new.value, "time": _now()},
            drop_oldest=max(
                0, len(mig.status.phase_transitions) + 1 - migration.MAX_PHASE_TRANSITIONS
            ),
        )
    except objects.ConflictError:
        log.info("migration %s: phase moved past %s by someone else", mig.metadata.name, old)
        return None
    node.remember(body)
    return migration.Migration.model_validate(body)


def now() -> datetime.datetime:
    """The agent's one wall clock (kubenova.clock; the node module uses it too)."""
    return clock.now()


def _now() -> str:
    return now().isoformat()


# --- the node the instance is on ---------------------------------------------------------------


async def _act(node: Node, obs: duties.Observed) -> None:
    inst = obs.instance
    assert inst is not None
    what = duties.act(obs)
    uuid = _uuid(inst)
    if what is duties.Act.SPAWN:
        assert inst.status.flavor is not None
        running = inst.spec.power_state is instance.PowerState.RUNNING
        await node.driver.spawn(_guest(inst, inst.status.flavor, uuid, running))
        faults.point("agent", "spawned")
    elif what is duties.Act.REDEFINE:
        assert inst.status.flavor is not None
        running = inst.spec.power_state is instance.PowerState.RUNNING
        guest = _guest(inst, inst.status.flavor, uuid, running)
        await node.driver.spawn(dataclasses.replace(guest, redefine=True))
    elif what is duties.Act.POWER_ON:
        await node.driver.power_on(uuid)
    elif what is duties.Act.POWER_OFF:
        await node.driver.power_off(uuid, shutdown_timeout(node, inst))


async def _report(node: Node, inst: instance.Instance) -> None:
    """Write status.host when what the hypervisor runs differs from what it says."""
    info = await node.driver.get_info(_uuid(inst))
    missing = info is None
    if info is None:
        if not _guest_missing(node, inst):
            return
        info = base.GuestInfo(base.Power.STOPPED, 0, 0, 0)  # nothing runs, nothing defined
    report = {
        "node": node.name,
        "powerState": info.power.value,
        "vcpus": info.vcpus,
        "memoryMiB": info.memory_mib,
        "diskGiB": info.disk_gib,
        "maxVcpus": info.max_vcpus,
        "maxMemoryMiB": info.max_memory_mib,
        "missing": missing,
    }
    current = inst.status.host
    same = (
        current is not None
        and {
            "node": current.node,
            "powerState": current.power_state.value,
            "vcpus": current.vcpus,
            "memoryMiB": current.memory_mib,
            "diskGiB": current.disk_gib,
            "maxVcpus": current.max_vcpus,
            "maxMemoryMiB": current.max_memory_mib,
            "missing": current.missing,
        }
        == report
    )
    failed = conditions.find(inst.status.conditions, "ResizeFailed")
    stale = (
        inst.status.phase is instance.Phase.ERROR
        and failed is not None
        and current is not None
        and not observed.reported_after(current, failed.last_transition_time)
    )
    if same and not stale:
        return
    # Echo the newest condition change we saw: the controller tells a fresh report from a
    # stale one by its own clock, whatever this node's clock says.
    seen = max((c.last_transition_time for c in inst.status.conditions), default=None)
    host: dict[str, Any] = {**report, "observedAt": _now()}
    if seen is not None:
        host["seenTransition"] = seen.isoformat()
    body = await node.objs.patch(
        objects.INSTANCE,
        inst.metadata.namespace,
        inst.metadata.name,
        {"status": {"host": host}},
        status=True,
    )
    node.remember(body)


def _guest_missing(node: Node, inst: instance.Instance) -> bool:
    """The hypervisor has no guest, yet this node keeps the instance's files, and nothing is
    in progress that makes or moves the guest: it was deleted outside kubenova."""
    st = inst.status
    return (
        st.phase in (instance.Phase.ACTIVE, instance.Phase.SHUTOFF)
        and not st.task_state
        and node.driver.owner(_uuid(inst)) is not None
    )


async def _release(node: Node, inst: instance.Instance) -> None:
    await node.driver.destroy(_uuid(inst))
    faults.point("agent", "destroyed")
    if node.name not in inst.status.released:
        body = await node.objs.patch(
            objects.INSTANCE,
            inst.metadata.namespace,
            inst.metadata.name,
            {"status": {"released": {node.name: _now()}}},
            status=True,
        )
        node.remember(body)
