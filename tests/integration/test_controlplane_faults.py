"""Control-plane faults for chaos tests, each done for real on one shared control plane:
the API server and etcd stopped, restarted, crashed and paused under clients that keep
their kubeconfig; etcd compacted so that an old watch gets 410 Gone; the audit log."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hack import controlplane
from hack import controlplane_faults as faults

from tests import builders, kube

# One control plane for the module: keep its tests on one worker.
pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group(__name__)]

STOP = pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
REQUEST_TIMEOUT = 3  # seconds: kubectl must fail quickly on a down or hung server
SHORT = f"--request-timeout={REQUEST_TIMEOUT}s"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    # With kube-controller-manager, as tests/env.py runs it: it must survive every fault.
    started = controlplane.ControlPlane(tmp_path_factory.mktemp("faults"), audit=True).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def admin(plane: controlplane.ControlPlane) -> kube.Kubectl:
    client = kube.Kubectl(plane.kubeconfig)
    kube.install_crds(client)
    return client


@pytest.fixture(autouse=True)
def whole_again(plane: controlplane.ControlPlane) -> Iterator[None]:
    """A test that failed half-way must not leave the next one a broken plane."""
    yield
    if faults.ETCD not in plane.processes:
        plane.spawn_etcd()
    if faults.APISERVER not in plane.processes:
        plane.spawn_apiserver()
    for name in plane.processes:
        faults.resume(plane, name)
    plane.wait_ready()


def api(plane: controlplane.ControlPlane, path: str) -> Any:
    """GET as the admin, the way a controller's client lists; of a watch, its first event."""
    url = f"{plane.server}{path}"
    with urllib.request.urlopen(url, context=plane.admin_context(), timeout=30) as answer:
        return json.loads(answer.readline() if "watch=1" in path else answer.read())


def watch_configmaps(plane: controlplane.ControlPlane, version: str) -> dict[str, Any]:
    # timeoutSeconds: with no event to send, the server ends the watch instead of hanging.
    return api(plane, f"{CONFIGMAPS}?watch=1&resourceVersion={version}&timeoutSeconds=10")


def pid_in_state(plane: controlplane.ControlPlane, name: str) -> int:
    """The pid `python -m hack.controlplane down` would stop."""
    return int(json.loads((plane.dir / "state.json").read_text())["pids"][name])


def lease(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": "chaos", "leaseDurationSeconds": 10},
        }
    )


@STOP
def test_apiserver_comes_back_on_its_port_for_clients_holding_the_kubeconfig(
    plane: controlplane.ControlPlane, admin: kube.Kubectl, crash: bool
) -> None:
    name = f"before-apiserver-{'crash' if crash else 'stop'}"
    admin("create", "configmap", name, "--from-literal=kept=yes")
    port, pid = plane.apiserver_port, plane.processes[faults.APISERVER].pid

    faults.stop_apiserver(plane, crash=crash)
    down = admin.run("get", "configmap", name, SHORT)
    assert not down.ok
    assert "refused" in down.stderr

    faults.start_apiserver(plane)
    assert plane.apiserver_port == port
    assert plane.processes[faults.APISERVER].pid != pid
    assert pid_in_state(plane, faults.APISERVER) == plane.processes[faults.APISERVER].pid
    # The same kubeconfig, untouched: same address, same CA, same client certificate.
    assert admin("get", "configmap", name, "-o", "jsonpath={.data.kept}") == "yes"
    assert plane.processes[faults.CONTROLLER_MANAGER].poll() is None


def test_apiserver_start_waits_out_a_port_taken_for_a_moment(
    plane: controlplane.ControlPlane, admin: kube.Kubectl
) -> None:
    """While it was down, another process held its port (a parallel test's free_port())."""
    faults.stop_apiserver(plane)
    squatter = socket.socket()
    # SO_REUSEADDR: bind despite the old connections in TIME_WAIT, as Go's listener does.
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((controlplane.LOOPBACK, plane.apiserver_port))
    squatter.listen()
    threading.Timer(2.0, squatter.close).start()
    log = plane.log_dir / "kube-apiserver.log"
    seen = len(log.read_bytes())

    faults.start_apiserver(plane)
    assert b"address already in use" in log.read_bytes()[seen:]  # refused, then tried again
    assert admin.run("get", "namespace", "default").ok


@STOP
def test_etcd_comes_back_with_its_data_and_the_apiserver_recovers(
    plane: controlplane.ControlPlane, admin: kube.Kubectl, crash: bool
) -> None:
    name = f"before-etcd-{'crash' if crash else 'stop'}"
    admin("create", "configmap", name, "--from-literal=kept=yes")
    ports = (plane.etcd_client_port, plane.etcd_peer_port)

    faults.stop_etcd(plane, crash=crash)
    # The API server stays up but can neither read nor write.
    assert plane.processes[faults.APISERVER].poll() is None
    assert not admin.run("get", "configmap", name, SHORT).ok

    faults.start_etcd(plane)
    assert (plane.etcd_client_port, plane.etcd_peer_port) == ports
    assert admin("get", "configmap", name, "-o", "jsonpath={.data.kept}") == "yes"
    admin("create", "configmap", f"{name}-after", "--from-literal=written=yes")


def test_a_watch_from_before_the_expiry_gets_410_gone_and_a_relist_sees_the_gap(
    plane: controlplane.ControlPlane, admin: kube.Kubectl
) -> None:
    """The chaos scenario: a controller's watch is down while objects change and go, etcd
    compacts, and on reconnecting its watch from the old version must fail, forcing a
    relist, rather than silently miss what happened."""
    admin("create", "configmap", "changed", "--from-literal=v=0")
    admin("create", "configmap", "deleted")
    old = api(plane, CONFIGMAPS)["metadata"]["resourceVersion"]
    # The watch is down: meanwhile one object changes three times and another goes.
    for v in (1, 2, 3):
        admin("patch", "configmap", "changed", "-p", json.dumps({"data": {"v": str(v)}}))
    admin("delete", "configmap", "deleted")
    assert faults.etcd_revision(plane) > int(old)

    compacted = faults.compact_etcd(plane)
    assert compacted >= int(old) + 4
    assert faults.compact_etcd(plane, int(old)) == int(old)  # already gone: no error
    # Compaction alone: the API server's watch cache still replays what the watch missed.
    replayed = watch_configmaps(plane, old)
    assert replayed["type"] != "ERROR", replayed
    assert int(replayed["object"]["metadata"]["resourceVersion"]) > int(old)

    assert faults.expire_resource_versions(plane) >= compacted
    gone = watch_configmaps(plane, old)
    assert gone["type"] == "ERROR"
    assert (gone["object"]["code"], gone["object"]["reason"]) == (410, "Expired")
    assert "too old resource version" in gone["object"]["message"]
    with pytest.raises(urllib.error.HTTPError) as listed_old:
        api(plane, f"{CONFIGMAPS}?resourceVersion={old}&resourceVersionMatch=Exact")
    assert listed_old.value.code == 410  # etcd's answer: the restarted cache passes it on
    # The relist the 410 forces shows the end state of the gap.
    relisted = {cm["metadata"]["name"]: cm.get("data") for cm in api(plane, CONFIGMAPS)["items"]}
    assert relisted["changed"] == {"v": "3"}
    assert "deleted" not in relisted


def test_audit_log_records_kubenova_and_lease_writes_only_across_restarts(
    plane: controlplane.ControlPlane, admin: kube.Kubectl
) -> None:
    def written(resource: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in plane.audit_events()
            if e["objectRef"].get("resource") == resource and e["objectRef"].get("name") == name
        ]

    admin("create", "configmap", "not-audited")
    admin.apply(builders.flavor("audited-flavor"))
    admin("create", "-f", "-", stdin=lease("audited-before"))
    faults.restart_apiserver(plane)  # must keep the audit flags
    admin("create", "-f", "-", stdin=lease("audited-after"))

    # The event is written once the response is complete: poll for the last one.
    kube.poll(lambda: written("leases", "audited-after"), timeout=10)
    for resource, name in (("leases", "audited-before"), ("leases", "audited-after")):
        [event] = written(resource, name)
        assert event["verb"] == "create"
        assert event["user"]["username"] == controlplane.ADMIN_USER
        assert event["objectRef"]["apiGroup"] == "coordination.k8s.io"
        assert event["requestReceivedTimestamp"]
    assert [e["verb"] for e in written("flavors", "audited-flavor")] == ["create"]
    assert not [e for e in plane.audit_events() if e["objectRef"].get("resource") == "configmaps"]


def test_a_paused_apiserver_hangs_requests_until_resumed(
    plane: controlplane.ControlPlane, admin: kube.Kubectl
) -> None:
    faults.pause(plane, faults.APISERVER)
    began = time.monotonic()
    hung = admin.run("get", "namespace", "default", SHORT)
    assert not hung.ok
    # Not refused: the kernel still accepts the connection, then nothing answers.
    assert "refused" not in hung.stderr
    assert time.monotonic() - began >= REQUEST_TIMEOUT

    faults.resume(plane, faults.APISERVER)
    assert admin("get", "namespace", "default", "-o", "name") == "namespace/default\n"


def test_a_paused_apiserver_stops_without_waiting_for_the_kill(
    plane: controlplane.ControlPlane, admin: kube.Kubectl
) -> None:
    faults.pause(plane, faults.APISERVER)
    began = time.monotonic()
    faults.stop_apiserver(plane)  # SIGTERM is handled once the process runs again
    assert time.monotonic() - began < controlplane.STOP_GRACE
    faults.start_apiserver(plane)
    assert admin.run("get", "namespace", "default").ok
