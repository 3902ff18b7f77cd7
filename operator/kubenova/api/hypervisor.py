"""Hypervisor: one per compute node, created by that node's agent (nova hypervisor-list).

Ownership: `spec` is the operator's (disable a node, tune allocation ratios; the agent
fills it only when it creates the object); `status.agent` is the agent's (driver,
capacity, heartbeat); `status.usage` and `status.state` are the controller's.
"""

from __future__ import annotations

import datetime
import enum

import pydantic

from kubenova.api import common, resource


class Driver(enum.StrEnum):
    FAKE = "fake"
    LIBVIRT = "libvirt"
    KUBEVIRT = "kubevirt"


class State(enum.StrEnum):
    """Service state as the controller judges it from the heartbeat (Nova's up/down)."""

    UP = "up"
    DOWN = "down"


class AllocationRatios(common.Model):
    """Overcommit factors: schedulable amount = capacity x ratio (Nova's *_allocation_ratio)."""

    # Defaults follow Nova's initial_*_allocation_ratio: CPU 4x, memory and disk 1x.
    cpu: float = pydantic.Field(default=4.0, ge=0.0, le=256.0, description="vCPU overcommit.")
    memory: float = pydantic.Field(default=1.0, ge=0.0, le=64.0, description="Memory overcommit.")
    disk: float = pydantic.Field(default=1.0, ge=0.0, le=64.0, description="Disk overcommit.")


class HypervisorSpec(common.Model):
    """Operator settings of a compute node."""

    disabled: bool = pydantic.Field(
        default=False,
        description=(
            "A disabled hypervisor receives no new instances or migrations (nova service-disable)."
        ),
    )
    disabled_reason: str = pydantic.Field(
        default="", max_length=255, description="Why the hypervisor is disabled."
    )
    allocation_ratios: AllocationRatios = pydantic.Field(
        default_factory=AllocationRatios, description="Overcommit factors per resource."
    )


class GuestOverhead(common.Model):
    """Memory the driver spends beside each guest, outside its flavor: the scheduler adds it
    to every guest's claim on this node (Nova's estimate_instance_overhead). KubeVirt's is
    its launcher pod (docs/kubevirt.md); libvirt reports none."""

    memory_mib: int = pydantic.Field(
        default=0, alias="memoryMiB", ge=0, description="Per guest, MiB."
    )
    memory_mib_per_vcpu: int = pydantic.Field(
        default=0, alias="memoryMiBPerVCPU", ge=0, description="Per vCPU of a guest, MiB."
    )
    memory_mib_per_gib: int = pydantic.Field(
        default=0,
        alias="memoryMiBPerGiB",
        ge=0,
        description="Per GiB of a guest's memory, MiB (KubeVirt's page tables).",
    )


class AgentReport(common.Model):
    """What the node's agent reports. Written by that agent only."""

    driver: Driver = pydantic.Field(description="Virt driver: fake, libvirt or kubevirt.")
    capacity: common.Resources = pydantic.Field(description="Physical capacity of the node.")
    guest_overhead: GuestOverhead = pydantic.Field(
        default_factory=GuestOverhead,
        description="Memory the driver spends beside each guest, counted by the scheduler.",
    )
    heartbeat_time: datetime.datetime = pydantic.Field(
        description="Last time the agent reported; older than serviceDownTimeSeconds means down."
    )
    version: str = pydantic.Field(default="", max_length=64, description="Agent version.")
    transfer_endpoint: str = pydantic.Field(
        default="",
        max_length=512,
        description=(
            "Base URL where this agent serves disks to destination agents during a cross-node "
            "migration (empty: the driver moves no files, e.g. fake)."
        ),
    )


class Usage(common.Model):
    """Claims on the node: sum of flavors of its instances and in-flight migrations."""

    vcpus: int = pydantic.Field(ge=0, description="vCPUs claimed.")
    memory_mib: int = pydantic.Field(alias="memoryMiB", ge=0, description="Memory claimed, MiB.")
    disk_gib: int = pydantic.Field(alias="diskGiB", ge=0, description="Disk claimed, GiB.")
    instances: int = pydantic.Field(ge=0, description="Instances placed or migrating here.")
    overhead_mib: int = pydantic.Field(
        default=0,
        alias="overheadMiB",
        ge=0,
        description="Memory the driver spends beside these instances (not in memoryMiB), MiB.",
    )


class HypervisorStatus(common.Model):
    """Observed state: the agent's report, the controller's usage and up/down judgement."""

    agent: AgentReport | None = pydantic.Field(
        default=None, description="Reported by the node's agent."
    )
    usage: Usage | None = pydantic.Field(
        default=None, description="Claims, computed by the controller."
    )
    state: State | None = pydantic.Field(
        default=None, description="up or down, judged by the controller from the heartbeat."
    )


class Hypervisor(common.Model):
    metadata: common.ObjectMeta
    spec: HypervisorSpec = pydantic.Field(default_factory=HypervisorSpec)
    status: HypervisorStatus = pydantic.Field(default_factory=HypervisorStatus)


def _col(name: str, path: str, description: str, type_: str = "integer") -> resource.PrinterColumn:
    return resource.PrinterColumn(name=name, json_path=path, type=type_, description=description)


RESOURCE = resource.CustomResource(
    kind="Hypervisor",
    plural="hypervisors",
    short_names=("hv",),
    scope=resource.Scope.CLUSTER,
    description=(
        "Hypervisor is a compute node as kubenova schedules it (nova hypervisor-list): "
        "capacity and heartbeat from its agent, usage from the controller."
    ),
    spec=HypervisorSpec,
    status=HypervisorStatus,
    spec_required=False,
    columns=(
        _col("VCPUS", ".status.agent.capacity.vcpus", "Physical vCPUs."),
        _col("USED", ".status.usage.vcpus", "vCPUs claimed."),
        _col("MEMORY", ".status.agent.capacity.memoryMiB", "Physical memory, MiB."),
        _col("USED", ".status.usage.memoryMiB", "Memory claimed, MiB."),
        _col("DISK", ".status.agent.capacity.diskGiB", "Disk, GiB."),
        _col("USED", ".status.usage.diskGiB", "Disk claimed, GiB."),
        _col("INSTANCES", ".status.usage.instances", "Instances placed or migrating here."),
        _col("STATE", ".status.state", "up or down (heartbeat).", "string"),
        resource.PrinterColumn(
            name="DRIVER", json_path=".status.agent.driver", description="Virt driver.", priority=1
        ),
        resource.PrinterColumn(
            name="DISABLED",
            json_path=".spec.disabled",
            type="boolean",
            description="Disabled by an operator.",
            priority=1,
        ),
        resource.AGE,
    ),
)
