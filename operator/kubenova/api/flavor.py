"""Flavor: a named size (vCPUs, memory, root disk), cluster-scoped, like Nova's flavors.

Sizes are immutable once created (a CEL transition rule), because instances and
migration records refer to them by name; `disabled` and `description` stay editable so
an operator can retire a flavor (no new instance or resize may pick it) as in Nova.
"""

from __future__ import annotations

import pydantic

from kubenova.api import common, resource

_IMMUTABLE = "is immutable: sizes of a Flavor never change; create a new Flavor instead"


def _immutable(field: str) -> dict[str, pydantic.JsonValue]:
    return resource.validations(
        resource.Rule(rule="self == oldSelf", message=f"{field} {_IMMUTABLE}")
    )


class FlavorSpec(common.Model):
    """The sizes an Instance gets when it uses this Flavor."""

    vcpus: int = pydantic.Field(
        ge=1,
        le=common.MAX_VCPUS,
        description="Number of virtual CPUs. Immutable.",
        json_schema_extra=_immutable("vcpus"),
    )
    memory_mib: int = pydantic.Field(
        alias="memoryMiB",
        ge=common.MIN_MEMORY_MIB,
        le=common.MAX_MEMORY_MIB,
        description="Memory in MiB (at least 64). Immutable.",
        json_schema_extra=_immutable("memoryMiB"),
    )
    disk_gib: int = pydantic.Field(
        alias="diskGiB",
        ge=1,
        le=common.MAX_DISK_GIB,
        description=(
            "Root disk size in GiB. A resize may grow the disk but never shrink it. Immutable."
        ),
        json_schema_extra=_immutable("diskGiB"),
    )
    disabled: bool = pydantic.Field(
        default=False,
        description=(
            "A disabled Flavor cannot be chosen by new instances or resizes; "
            "instances already using it keep running."
        ),
    )
    description: str = pydantic.Field(
        default="", max_length=1024, description="Free text shown to users."
    )
    allow_live_resize: bool = pydantic.Field(
        default=True,
        description=(
            "false: a resize to this Flavor is always cold (the guest reboots), whatever "
            "the Instance's resizePolicy says (Live is refused)."
        ),
    )


class Flavor(common.Model):
    metadata: common.ObjectMeta
    spec: FlavorSpec


RESOURCE = resource.CustomResource(
    kind="Flavor",
    plural="flavors",
    short_names=("flv",),
    scope=resource.Scope.CLUSTER,
    description=(
        "Flavor is a named size for instances (vCPUs, memory, root disk), like a Nova flavor. "
        "Changing an Instance's spec.flavor resizes it."
    ),
    spec=FlavorSpec,
    status=None,  # nothing observes a Flavor; like Nova's, it is pure configuration
    columns=(
        resource.PrinterColumn(
            name="VCPUS", json_path=".spec.vcpus", type="integer", description="Virtual CPUs."
        ),
        resource.PrinterColumn(
            name="MEMORY", json_path=".spec.memoryMiB", type="integer", description="Memory, MiB."
        ),
        resource.PrinterColumn(
            name="DISK", json_path=".spec.diskGiB", type="integer", description="Root disk, GiB."
        ),
        resource.PrinterColumn(
            name="DISABLED",
            json_path=".spec.disabled",
            type="boolean",
            description="Whether new instances and resizes may use this Flavor.",
            priority=1,
        ),
        resource.AGE,
    ),
)
