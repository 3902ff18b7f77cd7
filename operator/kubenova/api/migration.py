"""Migration: one record per resize or cold migrate, the work order between controller and agents.

Phases follow Nova's migration record. Every transition has exactly one legal writer
(`TRANSITIONS`), and the API server refuses any other transition through a CEL rule
generated from the same table, so a buggy or stale writer cannot skip a step.
Migrations are owned by their Instance and kept as history (`kubectl get mig`).
"""

from __future__ import annotations

import datetime
import enum

import pydantic

from kubenova.api import common, resource


class MigrationType(enum.StrEnum):
    RESIZE = "resize"  # new flavor, same node or another
    MIGRATION = "migration"  # same flavor, another node (cold migrate)


class Mode(enum.StrEnum):
    """How a resize is applied (spec.mode), or how its revert was (status.revertMode)."""

    LIVE = "live"  # on the running guest: hot-plug, a grown disk overlay; no reboot
    COLD = "cold"  # power off, set aside, boot on the new flavor (Nova's resize)


class BaseState(enum.StrEnum):
    """The source's side of a pre-copy (status.preCopy.base)."""

    OFFERED = (
        "offered"  # frozen under an overlay (or the guest is off): the destination may pull it
    )
    SKIPPED = "skipped"  # no pre-copy after all: the whole disk goes after power-off


class CopyState(enum.StrEnum):
    """The destination's side of a pre-copy (status.preCopy.copy)."""

    RECEIVED = "received"  # it holds the base: only the overlay is left for after power-off
    ABANDONED = "abandoned"  # it could not: the whole disk goes after power-off


class Part(enum.StrEnum):
    """What one transfer carries (status.transfer.part)."""

    DISK = "disk"  # the disk; in a pre-copy, the base sent while the guest runs
    DELTA = "delta"  # a pre-copy's overlay: what the guest wrote after the base froze


class MigrationPhase(enum.StrEnum):
    """Nova's migration status values, in order."""

    PRE_MIGRATING = "pre-migrating"  # destination claimed; source powering off / moving aside
    MIGRATING = "migrating"  # source handed the disk over (or moved it aside, same host)
    POST_MIGRATING = "post-migrating"  # destination building the guest on the new flavor
    FINISHED = "finished"  # guest runs on the destination: instance is VERIFY_RESIZE
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    ERROR = "error"


class Writer(enum.StrEnum):
    """Who may write a migration phase transition."""

    CONTROLLER = "controller"
    SOURCE = "source-agent"
    DEST = "dest-agent"


# (from, to) -> the one component allowed to make that transition. Creating a Migration
# (no phase yet -> pre-migrating) is the controller's. `error` is reachable from every
# non-final phase by the component working on it.
TRANSITIONS: dict[tuple[MigrationPhase | None, MigrationPhase], Writer] = {
    (None, MigrationPhase.PRE_MIGRATING): Writer.CONTROLLER,
    (MigrationPhase.PRE_MIGRATING, MigrationPhase.MIGRATING): Writer.SOURCE,
    (MigrationPhase.MIGRATING, MigrationPhase.POST_MIGRATING): Writer.DEST,
    (MigrationPhase.POST_MIGRATING, MigrationPhase.FINISHED): Writer.DEST,
    (MigrationPhase.FINISHED, MigrationPhase.CONFIRMING): Writer.CONTROLLER,
    (MigrationPhase.CONFIRMING, MigrationPhase.CONFIRMED): Writer.SOURCE,
    # A confirm that fails keeps the revert point and goes back to verify (retried): from
    # `finished` on, the new copy is the truth and a failure never restores the original.
    (MigrationPhase.CONFIRMING, MigrationPhase.FINISHED): Writer.SOURCE,
    (MigrationPhase.FINISHED, MigrationPhase.REVERTING): Writer.CONTROLLER,
    (MigrationPhase.REVERTING, MigrationPhase.REVERTED): Writer.SOURCE,
    (MigrationPhase.PRE_MIGRATING, MigrationPhase.ERROR): Writer.SOURCE,
    (MigrationPhase.MIGRATING, MigrationPhase.ERROR): Writer.DEST,
    (MigrationPhase.POST_MIGRATING, MigrationPhase.ERROR): Writer.DEST,
    (MigrationPhase.REVERTING, MigrationPhase.ERROR): Writer.SOURCE,
}

FINAL_PHASES = frozenset({MigrationPhase.CONFIRMED, MigrationPhase.REVERTED, MigrationPhase.ERROR})


# The one exception to one writer per transition, taken only when the source cannot answer:
# the controller confirms without a source that has been down for serviceDownTimeSeconds,
# recording status.sourceDownSince; the source cleans up when it returns.
SOURCE_DOWN_CONFIRM = (MigrationPhase.CONFIRMING, MigrationPhase.CONFIRMED)


def name_for(instance_name: str, instance_uid: str, sequence: int) -> str:
    """The name of an instance's `sequence`-th Migration: `<instance>-<uid prefix>-<n>`.

    Deterministic, so a create retried after its answer was lost meets its first attempt
    (409 AlreadyExists, then adopted) instead of making a second work order; the uid prefix
    keeps a re-created Instance of the same name clear of its predecessor's history.
    """
    suffix = f"-{instance_uid[:8]}-{sequence}"
    prefix = instance_name[: common.DNS_SUBDOMAIN_MAX - len(suffix)].rstrip(".-")
    return prefix + suffix


def sequence_of(name: str, instance_uid: str) -> int | None:
    """The sequence number `name_for` gave, or None for any other name."""
    head, _, number = name.rpartition("-")
    if not number.isdigit() or not head.endswith(f"-{instance_uid[:8]}"):
        return None
    return int(number)


def writer_of(old: MigrationPhase | None, new: MigrationPhase) -> Writer | None:
    """The component allowed to move a migration from `old` to `new`, or None if illegal."""
    return TRANSITIONS.get((old, new))


def _phase_transition_rule() -> resource.Rule:
    allowed: dict[MigrationPhase, list[str]] = {}
    for old, new in TRANSITIONS:
        if old is not None:
            allowed.setdefault(old, []).append(f"'{new.value}'")
    clauses = [
        f"(oldSelf.phase == '{old.value}' && self.phase in [{', '.join(sorted(news))}])"
        for old, news in sorted(allowed.items())
    ]
    return resource.Rule(
        rule=(
            "!has(oldSelf.phase) || (has(self.phase) && (self.phase == oldSelf.phase || "
            + " || ".join(clauses)
            + "))"
        ),
        message_expression=(
            "'illegal migration phase transition from ' + oldSelf.phase + ' to ' + "
            "(has(self.phase) ? self.phase : '<none>') + "
            "': phases move pre-migrating -> migrating -> post-migrating -> finished -> "
            "confirming -> confirmed (or back to finished), or finished -> reverting -> reverted, "
            "or to error'"
        ),
    )


PHASE_TRANSITION_RULE = _phase_transition_rule()


class MigrationSpec(common.Model):
    """The work order, written once by the controller when it schedules. Immutable."""

    instance_name: str = common.name_field("Name of the Instance (same namespace).")
    instance_uuid: str = common.uuid_field("status.uuid of the Instance (a lowercase UUID).")
    type: MigrationType = pydantic.Field(
        description="resize (new flavor, same or other node) or migration (cold migrate)."
    )
    source_node: str = common.name_field("Node the instance runs on before the operation.")
    dest_node: str = common.name_field(
        "Node the scheduler chose; equal to sourceNode for a same-host resize."
    )
    old_flavor: common.FlavorSnapshot = pydantic.Field(
        description="Sizes before; the source claim, held until confirm."
    )
    new_flavor: common.FlavorSnapshot = pydantic.Field(
        description="Sizes after; the destination claim, released on revert."
    )
    power_on: bool = pydantic.Field(
        default=True, description="Whether to start the guest after each step (it was running)."
    )
    mode: Mode = pydantic.Field(
        default=Mode.COLD,
        description=(
            "live: applied to the running guest without a reboot (same node, grow only); "
            "cold: power off and boot on the new flavor."
        ),
    )
    mode_reason: str = pydantic.Field(
        default="", max_length=1024, description="Why the controller chose this mode."
    )
    pre_copy: bool = pydantic.Field(
        default=False,
        description=(
            "Cross-node, the guest running: its disk is sent while it still runs (the base, "
            "frozen under an overlay), and only what it wrote since goes after power-off."
        ),
    )


class PreCopyStatus(common.Model):
    """A pre-copy as the two agents record it (each field has one writer)."""

    base: BaseState | None = pydantic.Field(
        default=None, description="Source: offered (the base may be pulled) or skipped."
    )
    base_message: str = pydantic.Field(
        default="", max_length=1024, description="Source: why the pre-copy was skipped."
    )
    overlay: bool = pydantic.Field(
        default=False,
        description="Source: the guest writes to an overlay since the freeze (sent at power-off).",
    )
    copy_: CopyState | None = pydantic.Field(
        default=None,
        alias="copy",
        description="Destination: received (only the overlay is left) or abandoned.",
    )
    copy_message: str = pydantic.Field(
        default="", max_length=1024, description="Destination: why the pre-copy was abandoned."
    )


class TransferStatus(common.Model):
    """The disk hand-off as the destination sees it, updated every few seconds."""

    part: Part = pydantic.Field(description="disk (or a pre-copy's base) or delta.")
    bytes: int = pydantic.Field(default=0, ge=0, description="Bytes of this part received.")
    total_bytes: int = pydantic.Field(
        default=0, ge=0, description="Bytes of this part to receive (its allocated data)."
    )
    bytes_while_running: int = pydantic.Field(
        default=0, ge=0, description="Bytes received while the guest still ran (pre-copy)."
    )
    bytes_after_stop: int = pydantic.Field(
        default=0, ge=0, description="Bytes received after the guest was powered off."
    )


# The history kept per migration; writers drop the oldest entries beyond it (retried
# confirms add two each).
MAX_PHASE_TRANSITIONS = 32


class PhaseTransition(common.Model):
    phase: MigrationPhase = pydantic.Field(description="Phase entered.")
    time: datetime.datetime = pydantic.Field(description="When it was entered.")


class MigrationStatus(common.Model):
    """Progress, moved forward by the component `TRANSITIONS` names for each step."""

    phase: MigrationPhase | None = pydantic.Field(
        default=None,
        description=(
            "pre-migrating, migrating, post-migrating, finished, confirming, confirmed, "
            "reverting, reverted or error (Nova's migration status)."
        ),
    )
    message: str = pydantic.Field(
        default="",
        max_length=32768,
        description="Why the migration is in error, or why its last confirm failed.",
    )
    dest_released: bool = pydantic.Field(
        default=False,
        description=(
            "Set by the destination agent during a cross-node revert once it has destroyed "
            "its copy; the source restores the original only after that (never two guests)."
        ),
    )
    source_down_since: datetime.datetime | None = pydantic.Field(
        default=None,
        description=(
            "Set by the controller when it confirmed without the source node, which had been "
            "down since this time (its last heartbeat) for serviceDownTimeSeconds; the source "
            "removes its copy when it returns (Nova bug 1855927: no confirm stuck for ever)."
        ),
    )
    source_cleaned: bool = pydantic.Field(
        default=False,
        description=(
            "Set by the source agent once it removed its copy after a confirm that completed "
            "while it was down."
        ),
    )
    revert_mode: Mode | None = pydantic.Field(
        default=None,
        description=(
            "How a revert restored the old sizes: live (unplugged on the running guest) or "
            "cold (powered off, the original disk back, booted on the old flavor)."
        ),
    )
    revert_reason: str = pydantic.Field(
        default="", max_length=1024, description="Why the revert took that path."
    )
    pre_copy: PreCopyStatus | None = pydantic.Field(
        default=None, description="The pre-copy of a cross-node move (spec.preCopy)."
    )
    transfer: TransferStatus | None = pydantic.Field(
        default=None, description="Destination: progress of the disk hand-off."
    )
    stopped_at: datetime.datetime | None = pydantic.Field(
        default=None, description="Source: when the guest's power-off began (by its clock)."
    )
    started_at: datetime.datetime | None = pydantic.Field(
        default=None, description="Destination: when the guest was started again (by its clock)."
    )
    downtime_seconds: float | None = pydantic.Field(
        default=None,
        ge=0,
        description=(
            "Destination: startedAt - stoppedAt, the guest's downtime (two nodes' clocks "
            "cross-node); unset for a live resize, which never powers off."
        ),
    )
    phase_transitions: list[PhaseTransition] = pydantic.Field(
        default_factory=list,
        max_length=MAX_PHASE_TRANSITIONS,
        description="When each phase was entered, for history and step timing.",
    )


class Migration(common.Model):
    metadata: common.ObjectMeta
    spec: MigrationSpec
    status: MigrationStatus = pydantic.Field(default_factory=MigrationStatus)


RESOURCE = resource.CustomResource(
    kind="Migration",
    plural="migrations",
    short_names=("mig",),
    scope=resource.Scope.NAMESPACED,
    description=(
        "Migration records one resize or cold migrate of an Instance (nova migration-list). "
        "Created by the controller, moved forward by the agents; kept as history."
    ),
    spec=MigrationSpec,
    status=MigrationStatus,
    spec_rules=(
        resource.Rule(
            rule="self == oldSelf",
            message="spec is immutable: a Migration is a work order written once by the controller",
        ),
    ),
    status_rules=(PHASE_TRANSITION_RULE,),
    columns=(
        resource.PrinterColumn(
            name="INSTANCE", json_path=".spec.instanceName", description="Instance migrated."
        ),
        resource.PrinterColumn(
            name="TYPE", json_path=".spec.type", description="resize or migration."
        ),
        resource.PrinterColumn(name="MODE", json_path=".spec.mode", description="live or cold."),
        resource.PrinterColumn(
            name="SOURCE", json_path=".spec.sourceNode", description="Source node."
        ),
        resource.PrinterColumn(
            name="DEST", json_path=".spec.destNode", description="Destination node."
        ),
        resource.PrinterColumn(
            name="OLD", json_path=".spec.oldFlavor.name", description="Old flavor."
        ),
        resource.PrinterColumn(
            name="NEW", json_path=".spec.newFlavor.name", description="New flavor."
        ),
        resource.PrinterColumn(
            name="STATUS", json_path=".status.phase", description="Migration phase."
        ),
        resource.PrinterColumn(
            name="DOWNTIME",
            json_path=".status.downtimeSeconds",
            type="number",
            description="Seconds the guest was powered off.",
        ),
        resource.AGE,
    ),
)
