"""CRD generation: the committed crds/ match the models, and schemas are structural."""

from __future__ import annotations

import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from kubenova import cli
from kubenova.api import crd, flavor, instance, resource
from tests import kube


def test_committed_crds_match_the_models(tmp_path: pathlib.Path) -> None:
    generated = {p.name: p.read_text() for p in cli.write_crds(tmp_path)}
    committed = {p.name: p.read_text() for p in kube.CRDS.glob("*.yaml")}
    assert committed == generated, "crds/ drifted from the models: run `make crds`"


@pytest.mark.parametrize("res", crd.RESOURCES, ids=lambda r: r.kind)
def test_every_field_has_a_description(res: resource.CustomResource) -> None:
    schema = crd.openapi_schema(res)
    schema["properties"].pop("metadata")  # the API server owns it
    assert crd.missing_descriptions(schema) == []


def _walk(schema: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [schema]
    for child in schema.get("properties", {}).values():
        nodes += _walk(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            nodes += _walk(schema[key])
    return nodes


@pytest.mark.parametrize("res", crd.RESOURCES, ids=lambda r: r.kind)
def test_schemas_are_structural(res: resource.CustomResource) -> None:
    for node in _walk(crd.openapi_schema(res)):
        assert "type" in node, node
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & node.keys(), node


@pytest.mark.parametrize(
    ("field_type", "error"),
    [
        pytest.param(int | str, "only Optional", id="union"),
        pytest.param(dict[str, Any], "need a type", id="untyped-values"),
    ],
)
def test_structural_refuses_what_crds_cannot_express(field_type: Any, error: str) -> None:
    model = pydantic.create_model("Bad", value=(field_type, ...))
    with pytest.raises(crd.SchemaError, match=error):
        crd.model_schema(model)


def test_structural_refuses_exclusive_bounds() -> None:
    model = pydantic.create_model("Bad", value=(int, pydantic.Field(gt=0)))
    with pytest.raises(crd.SchemaError, match="ge/le"):
        crd.model_schema(model)


def test_crds_name_the_public_interface() -> None:
    by_kind = {m["spec"]["names"]["kind"]: m for m in crd.manifests()}
    assert {k: m["spec"]["names"]["shortNames"] for k, m in by_kind.items()} == {
        "Flavor": ["flv"],
        "Instance": ["inst"],
        "Migration": ["mig"],
        "Hypervisor": ["hv"],
    }
    assert {k: m["spec"]["scope"] for k, m in by_kind.items()} == {
        "Flavor": "Cluster",
        "Instance": "Namespaced",
        "Migration": "Namespaced",
        "Hypervisor": "Cluster",
    }
    columns = {
        k: [
            c["name"]
            for c in m["spec"]["versions"][0]["additionalPrinterColumns"]
            if not c.get("priority")
        ]
        for k, m in by_kind.items()
    }
    assert columns == {
        "Flavor": ["VCPUS", "MEMORY", "DISK", "Age"],
        "Instance": ["FLAVOR", "STATUS", "TASK", "NODE", "Age"],
        "Migration": [
            *("INSTANCE", "TYPE", "MODE", "SOURCE", "DEST", "OLD", "NEW", "STATUS", "DOWNTIME"),
            "Age",
        ],
        "Hypervisor": [
            "VCPUS",
            "USED",
            "MEMORY",
            "USED",
            "DISK",
            "USED",
            "INSTANCES",
            "STATE",
            "Age",
        ],
    }


def test_status_subresource_on_every_kind_with_status() -> None:
    for manifest in crd.manifests():
        version = manifest["spec"]["versions"][0]
        has_status = "status" in version["schema"]["openAPIV3Schema"]["properties"]
        assert ("subresources" in version) == has_status


def test_samples_parse_as_models() -> None:
    models = {"Flavor": flavor.Flavor, "Instance": instance.Instance}
    docs = [
        d for p in sorted(kube.SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
    ]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Flavor"} == {
        "m1.tiny",
        "m1.small",
        "m1.medium",
        "m1.large",
        "m1.xlarge",
    }
    for doc in docs:
        models[doc["kind"]].model_validate(doc)
