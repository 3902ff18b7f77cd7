"""The local control plane: side by side on free ports, real RBAC, nothing left behind."""

from __future__ import annotations

import pathlib

import pytest
from hack import controlplane

from tests import builders, kube

pytestmark = pytest.mark.controlplane


def test_two_control_planes_run_side_by_side_and_stop_cleanly(
    control_plane: controlplane.ControlPlane, tmp_path: pathlib.Path
) -> None:
    second = controlplane.ControlPlane(tmp_path).start(controller_manager=False)
    pids = [p.pid for p in second.processes.values()]
    try:
        assert second.apiserver_port != control_plane.apiserver_port
        for plane in (control_plane, second):
            version = kube.Kubectl(pathlib.Path(plane.kubeconfig))("version", "-o", "json")
            assert '"gitVersion": "v1.34' in version  # version ldflags were set at build time
        # A namespace in one is not visible in the other: they share nothing.
        kube.Kubectl(second.kubeconfig)("create", "namespace", "only-in-second")
        other = kube.Kubectl(pathlib.Path(control_plane.kubeconfig)).run(
            "get", "namespace", "only-in-second"
        )
        assert not other.ok
    finally:
        second.stop()
    assert not [pid for pid in pids if pathlib.Path(f"/proc/{pid}").exists()]
    assert not (tmp_path / "etcd-data").exists()


def test_rbac_is_enforced(kubectl: kube.Kubectl) -> None:
    # The admin is in system:masters; an impersonated user with no bindings is refused.
    result = kubectl.run("get", "instances", "--as=nobody")
    assert not result.ok
    assert "forbidden" in result.stderr.lower()
    assert kubectl("auth", "can-i", "create", "flavors").strip() == "yes"


def test_controller_manager_collects_owned_objects(kubectl: kube.Kubectl) -> None:
    """Migrations are owned by their Instance: deleting it must garbage-collect them."""
    kubectl.apply(builders.instance("gc-owner"))
    uid = kubectl.get_json("instance", "gc-owner")["metadata"]["uid"]
    mig = builders.migration("gc-owned")
    mig["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Instance",
            "name": "gc-owner",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    kubectl.apply(mig)
    kubectl("delete", "instance", "gc-owner", "--wait=true")
    kubectl.wait_until(lambda: not kubectl.run("get", "migration", "gc-owned").ok, timeout=60)
