"""What one node does for one Instance, re-derived each time from the objects (idempotent).

Source node: pre-migrating -> set the original aside -> migrating; confirming -> delete
the revert point -> confirmed; reverting -> restore -> reverted.
Destination node: migrating -> post-migrating -> build the guest on the new flavor ->
finished; cross-node reverting -> destroy its copy -> destReleased.
The node the instance is on: spawn, power on/off, report `status.host`.
Deletion: destroy everything local, then record `status.released[<node>]`.
Each transition is a compare-and-swap on the phase the step started from; a crash at any
point leaves a phase from which the same step runs again.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from kubenova import faults
from kubenova.agent import transfer
from kubenova.api import instance, migration
from kubenova.drivers import base
from kubenova.kube import objects
from kubenova.lifecycle import conditions
from kubenova.observability import logs, metrics
from kubenova.scheduling.amounts import Amount

if TYPE_CHECKING:
    from kubenova.agent.node import Node

log = logging.getLogger(__name__)
P = migration.MigrationPhase


def _amount(snap: Any) -> Amount:
    return Amount(snap.vcpus, snap.memory_mib, snap.disk_gib)


async def reconcile(node: Node, key: str) -> float | None:
    body = node.instance(key)
    if body is None:
        return None
    logs.bind_instance(body)
    inst = instance.Instance.model_validate(body)
    uuid = inst.status.uuid or inst.metadata.uid
    if inst.metadata.deletion_timestamp is not None:
        await _release(node, inst, uuid)
        return None
    migs = node.migrations_of(inst.metadata.namespace or "default", inst.metadata.name)
    active = next((m for m in migs if m.status.phase not in migration.FINAL_PHASES), None)
    if active is not None:
        await _migration_steps(node, inst, active, uuid)
    elif inst.status.node == node.name:
        await _node_steps(node, inst, uuid, migs)
    if inst.status.node == node.name:
        fresh = node.instance(key)
        await _report(node, instance.Instance.model_validate(fresh or body), uuid)
    return None


# --- migration steps ---------------------------------------------------------------------------


async def _migration_steps(
    node: Node, inst: instance.Instance, mig: migration.Migration, uuid: str
) -> None:
    spec = mig.spec
    same = spec.source_node == spec.dest_node
    # Same node: source and destination steps alternate in this one loop.
    for _ in range(8):  # more steps than a migration has; the loop ends when nothing moves
        phase = mig.status.phase
        moved: migration.Migration | None = None
        try:
            if spec.source_node == node.name:
                moved = await _source_step(node, inst, mig, uuid, same)
            if moved is None and spec.dest_node == node.name:
                moved = await _dest_step(node, inst, mig, uuid, same)
        except base.DriverError as exc:
            log.error("migration %s failed in %s: %s", mig.metadata.name, phase, exc)
            await _fail(node, mig, str(exc))
            return
        if moved is None:
            return
        mig = moved


async def _source_step(
    node: Node, inst: instance.Instance, mig: migration.Migration, uuid: str, same: bool
) -> migration.Migration | None:
    phase = mig.status.phase
    if phase is P.PRE_MIGRATING:
        timeout = inst.spec.shutdown_timeout_seconds or node.cfg.shutdown_timeout_seconds
        await node.driver.migrate_disk_and_power_off(uuid, same_host=same, timeout=timeout)
        faults.point("agent", "source-set-aside")
        return await _advance(node, mig, P.PRE_MIGRATING, P.MIGRATING)
    if phase is P.CONFIRMING:
        await node.driver.confirm_migration(uuid, same_host=same)
        faults.point("agent", "source-confirmed")
        return await _advance(node, mig, P.CONFIRMING, P.CONFIRMED)
    if phase is P.REVERTING and (same or mig.status.dest_released):
        await node.driver.finish_revert_migration(
            _guest(inst, mig.spec.old_flavor, uuid, mig.spec.power_on), same_host=same
        )
        faults.point("agent", "source-reverted")
        return await _advance(node, mig, P.REVERTING, P.REVERTED)
    return None


async def _dest_step(
    node: Node, inst: instance.Instance, mig: migration.Migration, uuid: str, same: bool
) -> migration.Migration | None:
    phase = mig.status.phase
    if phase is P.MIGRATING:
        return await _advance(node, mig, P.MIGRATING, P.POST_MIGRATING)
    if phase is P.POST_MIGRATING:
        if not same:
            await _receive_disk(node, mig, uuid)
        guest = _guest(inst, mig.spec.new_flavor, uuid, mig.spec.power_on)
        await node.driver.finish_migration(guest, same_host=same)
        faults.point("agent", "dest-finished")
        return await _advance(node, mig, P.POST_MIGRATING, P.FINISHED)
    if phase is P.REVERTING and not same and not mig.status.dest_released:
        await node.driver.destroy(uuid)
        body = await node.objs.patch(
            objects.MIGRATION,
            mig.metadata.namespace,
            mig.metadata.name,
            {"status": {"destReleased": True}},
            status=True,
        )
        node.remember(body)
        return None  # the source restores next; nothing more here
    return None


async def _receive_disk(node: Node, mig: migration.Migration, uuid: str) -> None:
    """Pull the disk from the source agent (idempotent: a disk already in place stays)."""
    dest = node.driver.incoming_disk(uuid)
    if dest is None or dest.exists():
        return
    source, ns, name = mig.spec.source_node, mig.metadata.namespace or "default", mig.metadata.name
    hv = await node.objs.get(objects.HYPERVISOR, None, source)
    endpoint = (hv or {}).get("status", {}).get("agent", {}).get("transferEndpoint")
    if not endpoint:
        raise base.DriverError(
            f"source node {source} serves no disks (agent without --transfer-port)"
        )
    try:
        token = node.transfer_token(mig.metadata.uid)
        sent = await metrics.timed_step(
            "transfer_disk",
            node.driver.name,
            transfer.pull(f"{endpoint}/v1/migrations/{ns}/{name}/disk", token, dest),
        )
    except transfer.TransferError as exc:
        raise base.DriverError(f"disk transfer from {source} failed: {exc}") from exc
    log.info("migration %s: received %d bytes of disk data from %s", name, sent, source)
    faults.point("agent", "disk-received")


def _guest(inst: instance.Instance, flavor: Any, uuid: str, power_on: bool) -> base.Guest:
    return base.Guest(
        uuid=uuid,
        flavor=_amount(flavor),
        image=inst.spec.image,
        power_on=power_on,
        name=f"{inst.metadata.namespace}/{inst.metadata.name}",
    )


async def _advance(
    node: Node, mig: migration.Migration, old: P, new: P, message: str = ""
) -> migration.Migration | None:
    """CAS the phase; None if someone else moved it first (the next event tells us)."""
    status = {"phase": new.value, **({"message": message} if message else {})}
    try:
        body = await node.objs.set_phase(
            objects.MIGRATION,
            mig.metadata.namespace,
            mig.metadata.name,
            expected=old.value,
            status=status,
            transition={"phase": new.value, "time": _now()},
        )
    except objects.ConflictError:
        log.info("migration %s: phase moved past %s by someone else", mig.metadata.name, old)
        return None
    node.remember(body)
    return migration.Migration.model_validate(body)


async def _fail(node: Node, mig: migration.Migration, message: str) -> None:
    phase = mig.status.phase
    if phase is not None and migration.writer_of(phase, P.ERROR) is not None:
        await _advance(node, mig, phase, P.ERROR, message)


def now() -> datetime.datetime:
    """The agent's one clock (the node module uses it for heartbeats)."""
    return datetime.datetime.now(datetime.UTC)


def _now() -> str:
    return now().isoformat()


# --- the node the instance is on ---------------------------------------------------------------


async def _node_steps(
    node: Node, inst: instance.Instance, uuid: str, migs: list[migration.Migration]
) -> None:
    st = inst.status
    info = await node.driver.get_info(uuid)
    running = inst.spec.power_state is instance.PowerState.RUNNING
    if st.phase is instance.Phase.BUILD and info is None and st.flavor is not None:
        await node.driver.spawn(
            base.Guest(
                uuid=uuid,
                flavor=_amount(st.flavor),
                image=inst.spec.image,
                power_on=running,
                name=inst.metadata.name,
            )
        )
        faults.point("agent", "spawned")
        return
    if st.phase is instance.Phase.ERROR:
        # A failed resize: bring the original back (idempotent) so the controller can settle.
        failed = [m for m in migs if m.status.phase is P.ERROR and m.spec.source_node == node.name]
        if failed and st.flavor is not None:
            same = failed[-1].spec.dest_node == node.name
            await node.driver.finish_revert_migration(
                base.Guest(
                    uuid=uuid, flavor=_amount(st.flavor), image=inst.spec.image, power_on=running
                ),
                same_host=same,
            )
        return
    if info is None or st.phase not in (instance.Phase.ACTIVE, instance.Phase.SHUTOFF):
        return
    if running and info.power is base.Power.STOPPED:
        await node.driver.power_on(uuid)
    elif not running and info.power is base.Power.RUNNING:
        timeout = inst.spec.shutdown_timeout_seconds or node.cfg.shutdown_timeout_seconds
        await node.driver.power_off(uuid, timeout)


async def _report(node: Node, inst: instance.Instance, uuid: str) -> None:
    """Write status.host when what the hypervisor runs differs from what it says."""
    info = await node.driver.get_info(uuid)
    if info is None:
        return
    report = {
        "powerState": info.power.value,
        "vcpus": info.vcpus,
        "memoryMiB": info.memory_mib,
        "diskGiB": info.disk_gib,
    }
    current = inst.status.host
    same = (
        current is not None
        and {
            "powerState": current.power_state.value,
            "vcpus": current.vcpus,
            "memoryMiB": current.memory_mib,
            "diskGiB": current.disk_gib,
        }
        == report
    )
    failed = conditions.find(inst.status.conditions, "ResizeFailed")
    stale = (
        inst.status.phase is instance.Phase.ERROR
        and failed is not None
        and current is not None
        and current.observed_at < failed.last_transition_time
    )
    if same and not stale:
        return
    body = await node.objs.patch(
        objects.INSTANCE,
        inst.metadata.namespace,
        inst.metadata.name,
        {"status": {"host": {**report, "observedAt": _now()}}},
        status=True,
    )
    node.remember(body)


async def _release(node: Node, inst: instance.Instance, uuid: str) -> None:
    await node.driver.destroy(uuid)
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
