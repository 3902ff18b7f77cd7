"""How a kind is published as a CRD: names, scope, printer columns and CEL rules.

Descriptors only; `kubenova.api.crd` turns them and the models into CRD manifests.
"""

from __future__ import annotations

import dataclasses
import enum

import pydantic

from kubenova.api import names


class Scope(enum.StrEnum):
    CLUSTER = "Cluster"
    NAMESPACED = "Namespaced"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterColumn:
    """A `kubectl get` column (additionalPrinterColumns)."""

    name: str
    json_path: str
    type: str = "string"
    description: str
    priority: int = 0  # 1 = shown only with -o wide


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """A CEL validation rule (x-kubernetes-validations) enforced by the API server."""

    rule: str
    message: str = ""
    message_expression: str = ""
    reason: str = ""  # FieldValueInvalid (default), FieldValueForbidden, ...
    field_path: str = ""

    def to_wire(self) -> dict[str, pydantic.JsonValue]:
        wire: dict[str, pydantic.JsonValue] = {"rule": self.rule}
        if self.message:
            wire["message"] = self.message
        if self.message_expression:
            wire["messageExpression"] = self.message_expression
        if self.reason:
            wire["reason"] = self.reason
        if self.field_path:
            wire["fieldPath"] = self.field_path
        return wire


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomResource:
    """Everything needed to publish one kind as a CustomResourceDefinition."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Scope
    description: str
    spec: type[pydantic.BaseModel]
    status: type[pydantic.BaseModel] | None
    columns: tuple[PrinterColumn, ...]
    # Rules on the whole object: they can see spec and status together (transition rules).
    object_rules: tuple[Rule, ...] = ()
    spec_rules: tuple[Rule, ...] = ()
    status_rules: tuple[Rule, ...] = ()
    spec_required: bool = True

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{names.GROUP}"


def validations(*rules: Rule) -> dict[str, pydantic.JsonValue]:
    """json_schema_extra that attaches CEL rules to one field."""
    return {"x-kubernetes-validations": [r.to_wire() for r in rules]}


AGE = PrinterColumn(
    name="Age",
    json_path=".metadata.creationTimestamp",
    type="date",
    description="Time since the object was created.",
)
