"""The chart's label policy, enforced by a real API server: only the controller changes
kubenova's labels; a user's `kubectl label` or `kubectl replace` of them is refused, and
the controller still drives a resize with the policy in place."""

from __future__ import annotations

import json

import pytest
from hack import devenv

from tests.env import Env

pytestmark = pytest.mark.controlplane

NODE_LABEL = "compute.kubenova.io/node"


@pytest.fixture
def guarded(env: Env) -> Env:
    devenv.install_label_policy(env.plane.kubeconfig)
    env.start_controller()
    env.start_agent("node-a")
    env.create("demo")
    env.wait_phase("demo", "ACTIVE")
    return env


def test_a_user_cannot_strip_or_change_kubenova_labels(guarded: Env) -> None:
    env = guarded
    for change in (f"{NODE_LABEL}-", f"{NODE_LABEL}=node-b"):
        result = env.kubectl.run("label", "--overwrite", "instance", "demo", change)
        assert not result.ok
        assert "set by the kubenova controller only" in result.stderr, result.stderr
        assert NODE_LABEL in result.stderr
    assert env.instance("demo")["metadata"]["labels"][NODE_LABEL] == "node-a"
    assert env.kubectl.run("label", "instance", "demo", "team=blue").ok  # their own labels: fine


def test_replace_without_the_labels_is_refused(guarded: Env) -> None:
    """What a GitOps tool owning the manifest does: write it back without kubenova's labels."""
    env = guarded
    body = env.instance("demo")
    body["metadata"]["labels"] = {}
    result = env.kubectl.run("replace", "-f", "-", stdin=json.dumps(body))
    assert not result.ok
    assert "set by the kubenova controller only" in result.stderr, result.stderr


def test_creating_an_instance_with_a_node_label_is_refused(guarded: Env) -> None:
    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "sneaky", "namespace": "default", "labels": {NODE_LABEL: "node-a"}},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    result = guarded.kubectl.apply(manifest)
    assert not result.ok
    assert "set by the kubenova controller only" in result.stderr


def test_the_controller_still_moves_the_labels_through_a_resize(guarded: Env) -> None:
    env = guarded
    assert env.resize("demo", "m1.small").ok
    inst = env.wait_phase("demo", "VERIFY_RESIZE")
    assert inst["metadata"]["labels"]["compute.kubenova.io/dest-node"] == "node-a"
    env.annotate("demo", "resize", "confirm")
    inst = env.wait_phase("demo", "ACTIVE")
    assert "compute.kubenova.io/dest-node" not in inst["metadata"]["labels"]
    assert "forbidden" not in env.logs().lower(), env.logs()
