"""CustomResourceDefinition manifests generated from the API models.

pydantic's JSON Schema is close to what Kubernetes wants but not the same: CRDs need a
*structural* OpenAPI v3 schema (no $ref, no anyOf-with-null, a type on every node,
OpenAPI 3.0's boolean exclusiveMinimum). `structural()` rewrites one into the other and
refuses anything it cannot express, so a model change that Kubernetes would reject
fails here, in a unit test, rather than at `kubectl apply`.
"""

from __future__ import annotations

import copy
from typing import Any

from kubenova.api import flavor, hypervisor, instance, migration, names, resource

RESOURCES: tuple[resource.CustomResource, ...] = (
    flavor.RESOURCE,
    instance.RESOURCE,
    migration.RESOURCE,
    hypervisor.RESOURCE,
)

# Keys of JSON Schema that mean the same in a CRD's OpenAPI v3 subset.
_KEPT = {
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "nullable",
}
_DROPPED = {"title"}


class SchemaError(ValueError):
    """The model uses a construct a structural CRD schema cannot express."""


def _resolve(schema: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline $ref and unwrap Optional[X]; refuse nodes a CRD cannot type."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        node = {**target, **node}  # the field's own description wins over the class docstring
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v != {"type": "null"}]
        if len(variants) != 1:
            raise SchemaError(f"{path}: only Optional[X] unions are supported, got {variants}")
        node = {**_resolve(variants[0], defs, path), **node}
        node.pop("default", None)  # None defaults mean "unset", not a value to store
    if "exclusiveMinimum" in node or "exclusiveMaximum" in node:
        raise SchemaError(
            f"{path}: use ge/le, not gt/lt (OpenAPI 3.0 has no numeric exclusive bounds)"
        )
    if node.get("type") == "null" or ("type" not in node and "enum" not in node):
        raise SchemaError(f"{path}: every schema node needs a type")
    node.setdefault("type", "string")  # pydantic leaves the type off str enums
    return node


def structural(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node (and its children) into a structural CRD schema."""
    out: dict[str, Any] = {}
    for key, value in _resolve(schema, defs, path).items():
        if key in _DROPPED:
            continue
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {k: structural(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            if not isinstance(value, dict):
                raise SchemaError(f"{path}: free-form values need a type (structural schema)")
            out[key] = structural(value, defs, f"{path}[]")
        elif key in _KEPT:
            out[key] = value
        else:
            raise SchemaError(f"{path}: JSON Schema keyword {key!r} has no CRD equivalent")
    if out.get("default") in ({}, []):
        del out["default"]  # empty containers are the same as absent to every reader
    return out


def model_schema(model: type[Any], rules: tuple[resource.Rule, ...] = ()) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = structural(raw, defs, model.__name__)
    if rules:
        schema["x-kubernetes-validations"] = [r.to_wire() for r in rules]
    return schema


def openapi_schema(res: resource.CustomResource) -> dict[str, Any]:
    """The openAPIV3Schema of one kind: apiVersion, kind, metadata, spec and status."""
    properties: dict[str, Any] = {
        "apiVersion": {
            "type": "string",
            "description": "Versioned schema of this representation: " + names.API_VERSION + ".",
        },
        "kind": {"type": "string", "description": f"Always {res.kind}."},
        # The API server owns metadata's schema; a CRD may only say it is an object.
        "metadata": {"type": "object"},
        "spec": model_schema(res.spec, res.spec_rules),
    }
    if res.status is not None:
        properties["status"] = model_schema(res.status, res.status_rules)
    root: dict[str, Any] = {
        "type": "object",
        "description": res.description,
        "properties": properties,
    }
    if res.spec_required:
        root["required"] = ["spec"]
    if res.object_rules:
        root["x-kubernetes-validations"] = [r.to_wire() for r in res.object_rules]
    return root


def manifest(res: resource.CustomResource) -> dict[str, Any]:
    """The CustomResourceDefinition for one kind."""
    version: dict[str, Any] = {
        "name": names.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(res)},
        "additionalPrinterColumns": [
            {
                "name": c.name,
                "type": c.type,
                "jsonPath": c.json_path,
                "description": c.description,
                **({"priority": c.priority} if c.priority else {}),
            }
            for c in res.columns
        ],
    }
    if res.status is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": res.crd_name,
            "labels": {"app.kubernetes.io/part-of": "kubenova"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": res.scope.value,
            "names": {
                "kind": res.kind,
                "listKind": f"{res.kind}List",
                "plural": res.plural,
                "singular": res.singular,
                "shortNames": list(res.short_names),
                "categories": [names.CATEGORY],
            },
            "versions": [version],
        },
    }


def manifests() -> list[dict[str, Any]]:
    return [copy.deepcopy(manifest(r)) for r in RESOURCES]


def missing_descriptions(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of schema properties without a description (kubectl explain would print nothing)."""
    found: list[str] = []
    for key, child in schema.get("properties", {}).items():
        child_path = f"{path}.{key}"
        if not child.get("description"):
            found.append(child_path)
        found.extend(missing_descriptions(child, child_path))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found.extend(missing_descriptions(schema[key], f"{path}[]"))
    return found
