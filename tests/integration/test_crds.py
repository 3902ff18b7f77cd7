"""What a user sees after installing the CRDs: columns, short names, kubectl explain."""

from __future__ import annotations

import pytest

from tests import builders, kube
from tests.kube import Kubectl

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def samples(kubectl: Kubectl) -> Kubectl:
    kubectl("apply", "-f", str(kube.SAMPLES / "flavors.yaml"))
    return kubectl


def test_get_flavors_lists_the_samples_with_sizes(samples: Kubectl) -> None:
    lines = samples("get", "flavors").splitlines()
    assert lines[0].split() == ["NAME", "VCPUS", "MEMORY", "DISK", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert rows["m1.tiny"] == ["1", "512", "1"]
    assert rows["m1.xlarge"] == ["8", "16384", "160"]
    assert {"m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"} <= rows.keys()


@pytest.fixture(scope="module")
def one_of_each(samples: Kubectl) -> Kubectl:
    for manifest in (
        builders.instance("cols-demo"),
        builders.migration("cols-demo"),
        builders.hypervisor("node-cols"),
    ):
        result = samples.apply(manifest)
        assert result.ok, result.stderr
    return samples


@pytest.mark.parametrize(
    ("short", "header"),
    [
        ("flv", "NAME VCPUS MEMORY DISK AGE"),
        ("inst", "NAME FLAVOR STATUS TASK NODE AGE"),
        ("mig", "NAME INSTANCE TYPE MODE SOURCE DEST OLD NEW STATUS DOWNTIME AGE"),
        ("hv", "NAME VCPUS USED MEMORY USED DISK USED INSTANCES STATE AGE"),
    ],
)
def test_short_names_and_columns(one_of_each: Kubectl, short: str, header: str) -> None:
    lines = one_of_each("get", short).splitlines()
    assert " ".join(lines[0].split()) == header
    assert len(lines) >= 2


def test_columns_show_progress(kubectl: Kubectl) -> None:
    kubectl.apply(kube.SAMPLES.joinpath("instance.yaml").read_text().replace("demo", "cols"))
    kubectl(
        "patch",
        "instance",
        "cols",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"RESIZE","taskState":"resize_migrating","node":"node-a"}}',
    )
    lines = kubectl("get", "inst", "cols").splitlines()
    assert " ".join(lines[0].split()) == "NAME FLAVOR STATUS TASK NODE AGE"
    assert lines[1].split()[:5] == ["cols", "m1.tiny", "RESIZE", "resize_migrating", "node-a"]


def test_explain_instance_spec_flavor(kubectl: Kubectl) -> None:
    out = kubectl("explain", "instance.spec.flavor")
    assert "FIELD: flavor <string>" in out
    assert "Changing it resizes the instance" in out
    assert "compute.kubenova.io/resize=confirm" in out


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("flavor.spec.memoryMiB", "Memory in MiB"),
        ("instance.status.phase", "VERIFY_RESIZE"),
        ("migration.status.phase", "pre-migrating"),
        ("hypervisor.spec.allocationRatios.cpu", "vCPU overcommit"),
    ],
)
def test_explain_describes_fields(kubectl: Kubectl, path: str, words: str) -> None:
    assert words in kubectl("explain", path)


def test_kubenova_category_lists_every_kind(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources", "--categories=kubenova", "-o", "name").split()
    assert sorted(resources) == [
        "flavors.compute.kubenova.io",
        "hypervisors.compute.kubenova.io",
        "instances.compute.kubenova.io",
        "migrations.compute.kubenova.io",
    ]
