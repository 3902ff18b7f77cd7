"""Building blocks shared by the kinds: the model base, conditions, flavor snapshots, metadata.

Field names on the wire are camelCase (Kubernetes convention); Python uses snake_case.
Units are part of a name where Kubernetes users would otherwise guess (memoryMiB, diskGiB).
"""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
from pydantic import alias_generators

from kubenova.api import names

# DNS-1123 subdomain: what Kubernetes accepts as an object name (Flavor, Node, Instance).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX = 253
# An instance uuid (Kubernetes uids are lowercase UUIDs): it names directories on nodes.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# An image is named, never given as a path: the node's driver looks the name up in its own
# images path (a tenant must not make a root agent read the node's files into a disk).
IMAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
IMAGE_NAME_MAX = 253
# Condition reasons are CamelCase identifiers (metav1.Condition's validation).
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# Generous upper bounds that still catch typos (a memoryMiB meant as bytes): 1,024 vCPUs,
# 16 TiB of memory and 64 TiB of disk are beyond any single hypervisor kubenova targets.
MAX_VCPUS = 1024
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_DISK_GIB = 64 * 1024
MIN_MEMORY_MIB = 64  # below this no Linux guest boots


class Model(pydantic.BaseModel):
    """Base of every API model: camelCase on the wire, unknown keys ignored when parsing."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict to send to the API server (aliases, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _name_field(description: str, **kwargs: Any) -> Any:
    return pydantic.Field(
        **kwargs,
        description=description,
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX,
        pattern=DNS_SUBDOMAIN,
    )


class Resources(Model):
    """An amount of the three resources a flavor sizes and a hypervisor offers."""

    vcpus: int = pydantic.Field(ge=0, description="Virtual CPUs.")
    memory_mib: int = pydantic.Field(
        alias="memoryMiB", ge=0, description="Memory in MiB (1 MiB = 1,048,576 bytes)."
    )
    disk_gib: int = pydantic.Field(
        alias="diskGiB", ge=0, description="Disk in GiB (1 GiB = 1,073,741,824 bytes)."
    )


class FlavorSnapshot(Model):
    """A copy of a Flavor's sizes taken when it was applied, so later Flavor edits or
    deletion never change what an instance runs with (KubeVirt's ControllerRevision idea)."""

    name: str = _name_field("Name of the Flavor the sizes were copied from.")
    vcpus: int = pydantic.Field(ge=1, le=MAX_VCPUS, description="Virtual CPUs.")
    memory_mib: int = pydantic.Field(
        alias="memoryMiB", ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB, description="Memory in MiB."
    )
    disk_gib: int = pydantic.Field(
        alias="diskGiB", ge=1, le=MAX_DISK_GIB, description="Root disk size in GiB."
    )

    def resources(self) -> Resources:
        return Resources(vcpus=self.vcpus, memory_mib=self.memory_mib, disk_gib=self.disk_gib)


class Condition(Model):
    """One aspect of the object's state, as in the Kubernetes API conventions (metav1.Condition)."""

    type: str = pydantic.Field(
        min_length=1, max_length=316, description="Type of condition in CamelCase, e.g. Ready."
    )
    status: names.ConditionStatus = pydantic.Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: str = pydantic.Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description="Machine-readable CamelCase reason for the last transition, e.g. NoValidHost.",
    )
    message: str = pydantic.Field(
        default="", max_length=32768, description="Human-readable details of the last transition."
    )
    last_transition_time: datetime.datetime = pydantic.Field(
        description="When the condition last changed status (RFC 3339)."
    )
    observed_generation: int | None = pydantic.Field(
        default=None,
        ge=0,
        description="metadata.generation of the object this condition was set for.",
    )


class OwnerReference(Model):
    kind: str = ""
    name: str = ""
    uid: str = ""


class ObjectMeta(Model):
    """The parts of metadata kubenova reads. Parsed once at the edge; never sent back whole."""

    name: str = ""
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
    finalizers: list[str] = pydantic.Field(default_factory=list)
    deletion_timestamp: datetime.datetime | None = None
    creation_timestamp: datetime.datetime | None = None
    owner_references: list[OwnerReference] = pydantic.Field(default_factory=list)


def name_field(description: str, **kwargs: Any) -> Any:
    """A pydantic Field for a reference to another object by name (DNS subdomain)."""
    return _name_field(description, **kwargs)


def uuid_field(description: str, **kwargs: Any) -> Any:
    """A pydantic Field for an instance uuid (UUID_PATTERN)."""
    return pydantic.Field(
        **kwargs, description=description, min_length=36, max_length=36, pattern=UUID_PATTERN
    )
