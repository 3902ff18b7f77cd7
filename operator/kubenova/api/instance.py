"""Instance: a virtual machine, namespaced, with Nova's vm_state/task_state as phase/taskState.

Ownership: `spec` is the user's; `status` is the controller's except `status.host`, which
the agent of the node running the instance writes (what the hypervisor really runs).
"""

from __future__ import annotations

import datetime
import enum

import pydantic

from kubenova.api import common, names, resource


class Phase(enum.StrEnum):
    """Instance phase (Nova's vm_state). Written by the controller only."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    RESIZE = "RESIZE"
    VERIFY_RESIZE = "VERIFY_RESIZE"
    REVERT_RESIZE = "REVERT_RESIZE"
    ERROR = "ERROR"
    DELETING = "DELETING"


# Phases in which spec.flavor may change (a resize may start). Anything else is refused
# by the API server through the CEL rule below, so `kubectl edit` fails at once.
RESIZABLE_PHASES = (Phase.ACTIVE, Phase.SHUTOFF)


class TaskState(enum.StrEnum):
    """What the instance is doing now (Nova's task_state); empty when idle. Controller-owned."""

    NONE = ""
    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    RESIZE_PREP = "resize_prep"
    RESIZE_PRECOPYING = "resize_precopying"  # the disk goes to the destination while it runs
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_CONFIRMING = "resize_confirming"
    RESIZE_REVERTING = "resize_reverting"
    POWERING_OFF = "powering_off"
    POWERING_ON = "powering_on"
    DELETING = "deleting"


class PowerState(enum.StrEnum):
    """Desired (spec) or observed (status.host) power state."""

    RUNNING = "Running"
    STOPPED = "Stopped"


class ResizePolicy(enum.StrEnum):
    """How a resize may be applied (spec.resizePolicy)."""

    AUTO = "Auto"  # live when possible, cold otherwise; the Migration says which and why
    LIVE = "Live"  # live or not at all: refused with a ResizeFailed condition when it cannot
    COLD = "Cold"  # always power off and boot on the new flavor (Nova's resize)


class InstanceSpec(common.Model):
    """What the user wants: size, image, power state, placement constraints."""

    flavor: str = common.name_field(
        "Name of the Flavor to run with. Changing it resizes the instance: it is scheduled "
        "(same node or another), moves to VERIFY_RESIZE, and waits for the annotation "
        "compute.kubenova.io/resize=confirm or =revert. Allowed to change only while "
        "status.phase is ACTIVE or SHUTOFF."
    )
    image: str = pydantic.Field(
        min_length=1,
        max_length=common.IMAGE_NAME_MAX,
        pattern=common.IMAGE_NAME_PATTERN,
        description=(
            "Boot image: the name of an image in the node's images path (letters, digits, "
            "'.', '_' and '-'; never a path). Immutable."
        ),
        json_schema_extra=resource.validations(
            resource.Rule(
                rule="self == oldSelf",
                message="image is immutable: rebuild is not supported; create a new Instance",
            )
        ),
    )
    power_state: PowerState = pydantic.Field(
        default=PowerState.RUNNING,
        description="Running or Stopped. A resize keeps the power state the instance had.",
    )
    node_selector: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description=(
            "Labels a Hypervisor must carry to host this instance (like a Pod's nodeSelector). "
            "Applies to the next scheduling decision."
        ),
    )
    shutdown_timeout_seconds: int | None = pydantic.Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "Seconds a graceful power-off may take before it is forced. "
            "Unset: the agent's default (Nova's shutdown_timeout)."
        ),
    )
    resize_policy: ResizePolicy = pydantic.Field(
        default=ResizePolicy.AUTO,
        description=(
            "Auto: a resize that only grows vCPUs, memory or disk and fits on the current "
            "node is applied live, without a reboot, and can still be reverted; anything "
            "else is cold. Live: live or refused (a ResizeFailed condition says why). "
            "Cold: always power off and boot on the new flavor, as Nova does."
        ),
    )


class HostStatus(common.Model):
    """What the hypervisor really runs. Written by the agent of status.node only."""

    node: str | None = pydantic.Field(
        default=None,
        description=(
            "The node whose agent made this report. Only a report of status.node describes "
            "the instance: one from another node (the source of a move, written from a "
            "stale cache) is disregarded until that node's own arrives."
        ),
    )
    power_state: PowerState = pydantic.Field(description="Observed power state of the guest.")
    vcpus: int = pydantic.Field(ge=0, description="vCPUs the guest definition has.")
    memory_mib: int = pydantic.Field(
        alias="memoryMiB", ge=0, description="Memory of the guest definition, MiB."
    )
    disk_gib: int = pydantic.Field(
        alias="diskGiB", ge=0, description="Virtual size of the root disk, GiB."
    )
    max_vcpus: int = pydantic.Field(
        default=0,
        ge=0,
        description="vCPUs the running guest can grow to without a reboot (0: no headroom).",
    )
    max_memory_mib: int = pydantic.Field(
        default=0,
        alias="maxMemoryMiB",
        ge=0,
        description="Memory (MiB) the running guest can grow to without a reboot (0: none).",
    )
    missing: bool = pydantic.Field(
        default=False,
        description=(
            "The node keeps the instance's disk but its hypervisor has no guest for it: the "
            "domain or VirtualMachine was deleted outside kubenova. The controller says so "
            "(Ready=False, GuestMissing) and the agent defines the guest again from that "
            "disk, never from the image."
        ),
    )
    observed_at: datetime.datetime = pydantic.Field(
        description="When the agent looked (its node's clock: for people, never compared)."
    )
    seen_transition: datetime.datetime | None = pydantic.Field(
        default=None,
        description=(
            "The newest lastTransitionTime among the Instance's conditions when the agent "
            "looked: the controller knows a report came after a condition changed by this "
            "time of its own clock, not by observedAt."
        ),
    )


class InstanceStatus(common.Model):
    """Progress and placement, written by the controller (status.host by the node's agent)."""

    phase: Phase | None = pydantic.Field(
        default=None,
        description=(
            "Lifecycle state, as Nova's vm_state: BUILD, ACTIVE, SHUTOFF, RESIZE, "
            "VERIFY_RESIZE, REVERT_RESIZE, ERROR or DELETING."
        ),
    )
    task_state: TaskState | None = pydantic.Field(
        default=None,
        description=(
            "Step in progress, as Nova's task_state (e.g. resize_migrating); empty when idle."
        ),
    )
    node: str | None = common.name_field(
        "Node (Hypervisor) the instance is placed on.", default=None
    )
    flavor: common.FlavorSnapshot | None = pydantic.Field(
        default=None,
        description="Sizes the instance currently runs with (the applied flavor, copied).",
    )
    previous_flavor: common.FlavorSnapshot | None = pydantic.Field(
        default=None,
        description=(
            "Sizes before the resize or migration in progress; set until it is confirmed or "
            "reverted. Setting spec.flavor back to this flavor's name reverts."
        ),
    )
    migration_ref: str | None = pydantic.Field(
        default=None,
        max_length=common.DNS_SUBDOMAIN_MAX,
        description="Name of the Migration in progress or awaiting confirm/revert, if any.",
    )
    migration_count: int | None = pydantic.Field(
        default=None,
        ge=0,
        description=(
            "Migrations the controller has created for this instance; the next one is named "
            "<instance>-<uid prefix>-<count+1>, so a retried create finds its first attempt."
        ),
    )
    uuid: str | None = common.uuid_field(
        "Stable instance UUID: the libvirt domain name and UUID, and its directory.",
        default=None,
    )
    observed_generation: int | None = pydantic.Field(
        default=None, ge=0, description="metadata.generation the controller last acted on."
    )
    conditions: list[common.Condition] = pydantic.Field(
        default_factory=list,
        description=(
            "Ready, Scheduled, FlavorValid, ResizeFailed, MigrateFailed (Kubernetes API "
            "conventions)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    host: HostStatus | None = pydantic.Field(
        default=None, description="What the hypervisor runs, reported by the node's agent."
    )
    released: dict[str, datetime.datetime] = pydantic.Field(
        default_factory=dict,
        description=(
            "Node name -> when that node's agent removed everything it held for this "
            "instance after deletion began. Each key is written by that node's agent only."
        ),
    )

    def node_report(self) -> HostStatus | None:
        """status.host when the agent of status.node made it (or an agent too old to say
        which node it is): what the instance's own node runs."""
        if self.host is None or self.host.node in (None, self.node):
            return self.host
        return None


class Instance(common.Model):
    metadata: common.ObjectMeta
    spec: InstanceSpec
    status: InstanceStatus = pydantic.Field(default_factory=InstanceStatus)


_RESIZABLE = ", ".join(f"'{p.value}'" for p in RESIZABLE_PHASES)
# Allowed: before the first placement (nothing runs yet), in ACTIVE or SHUTOFF, no change,
# or setting it back to status.previousFlavor (a declarative revert; the controller uses
# the same path for the revert annotation and for rolling back a failed resize).
FLAVOR_CHANGE_RULE = resource.Rule(
    rule=(
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || !has(oldSelf.status.node) || "
        f"oldSelf.status.phase in [{_RESIZABLE}] || self.spec.flavor == oldSelf.spec.flavor || "
        "(has(oldSelf.status.previousFlavor) && "
        "self.spec.flavor == oldSelf.status.previousFlavor.name)"
    ),
    message_expression=(
        "'spec.flavor cannot change while status.phase is ' + oldSelf.status.phase + "
        f"': confirm or revert the pending resize first (annotate {names.ANNOTATION_RESIZE}"
        "=confirm or =revert, or set spec.flavor back to the previous flavor to revert) "
        "or wait until the instance is ACTIVE or SHUTOFF'"
    ),
    reason="FieldValueForbidden",
    field_path=".spec.flavor",
)

RESOURCE = resource.CustomResource(
    kind="Instance",
    plural="instances",
    short_names=("inst",),
    scope=resource.Scope.NAMESPACED,
    description=(
        "Instance is a virtual machine with Nova's lifecycle: edit spec.flavor to resize "
        "(status.phase goes RESIZE then VERIFY_RESIZE), then annotate "
        "compute.kubenova.io/resize=confirm or =revert; annotate compute.kubenova.io/migrate "
        "to cold-migrate."
    ),
    spec=InstanceSpec,
    status=InstanceStatus,
    object_rules=(FLAVOR_CHANGE_RULE,),
    columns=(
        resource.PrinterColumn(
            name="FLAVOR", json_path=".spec.flavor", description="Requested flavor."
        ),
        resource.PrinterColumn(
            name="STATUS", json_path=".status.phase", description="Lifecycle phase (vm_state)."
        ),
        resource.PrinterColumn(
            name="TASK", json_path=".status.taskState", description="Step in progress (task_state)."
        ),
        resource.PrinterColumn(
            name="NODE", json_path=".status.node", description="Node the instance is placed on."
        ),
        resource.AGE,
        resource.PrinterColumn(
            name="POWER",
            json_path=".status.host.powerState",
            description="Power state the hypervisor reports.",
            priority=1,
        ),
        resource.PrinterColumn(
            name="MIGRATION",
            json_path=".status.migrationRef",
            description="Migration in progress or awaiting confirm/revert.",
            priority=1,
        ),
    ),
)
