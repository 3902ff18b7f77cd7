"""Faults for chaos tests on a running ControlPlane: stop, start and pause its processes;
read and compact etcd's history.

A process started again gets the ports, certificates, data directory and flags of the first
start (ControlPlane keeps them), so clients holding the kubeconfig reconnect on their own
and etcd keeps every object. A start returns once kube-apiserver is ready again; a stop is
SIGTERM, then SIGKILL after controlplane.STOP_GRACE.

Call these from the thread that started the plane: its processes run under
`setpriv --pdeathsig`, which kills a child when the thread that spawned it exits.

etcd is reached through its v3 JSON gateway (no etcdctl is built): POST /v3/kv/range and
/v3/kv/compaction on the client URL, with keys in base64.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from hack import controlplane

APISERVER = "kube-apiserver"
ETCD = "etcd"
CONTROLLER_MANAGER = "kube-controller-manager"
# Go listeners set SO_REUSEADDR, so connections in TIME_WAIT never block the old port. But
# while it was free, a parallel test's free_port() probe may have bound it for an instant:
# a start that fails with "address already in use" is tried again for this long.
PORT_RETRY = 10.0  # seconds
HTTP_TIMEOUT = 10.0  # seconds, for one request to etcd


def stop(plane: controlplane.ControlPlane, name: str, *, crash: bool = False) -> None:
    """Stop one process of the plane and forget it: SIGTERM, SIGKILL after STOP_GRACE; or
    SIGKILL at once if `crash` (no graceful shutdown: what a crashed or OOM-killed process
    leaves behind)."""
    _wait_controllers_started(plane)
    proc = plane.processes.pop(name)
    for sig in (signal.SIGKILL,) if crash else (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
            os.killpg(proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=controlplane.STOP_GRACE)
            break
    plane.save_state()


def stop_apiserver(plane: controlplane.ControlPlane, *, crash: bool = False) -> None:
    stop(plane, APISERVER, crash=crash)


def start_apiserver(plane: controlplane.ControlPlane) -> None:
    """Start kube-apiserver again on its port, with its flags; return once it is ready."""
    _start(plane, APISERVER, plane.spawn_apiserver, plane.wait_ready)


def restart_apiserver(plane: controlplane.ControlPlane, *, crash: bool = False) -> None:
    stop_apiserver(plane, crash=crash)
    start_apiserver(plane)


def stop_etcd(plane: controlplane.ControlPlane, *, crash: bool = False) -> None:
    """Stop etcd; kube-apiserver keeps running, unready, and its requests fail meanwhile.
    A graceful stop takes etcd's request timeout, 7 s: it waits that long for the API
    server's watch streams to end (5 s + 2 election timeouts). `crash` does not wait."""
    stop(plane, ETCD, crash=crash)


def start_etcd(plane: controlplane.ControlPlane) -> None:
    """Start etcd again on its data and ports; return once it is healthy and kube-apiserver
    is ready again (its /readyz checks etcd)."""

    def ready() -> None:
        _wait_etcd_healthy(plane)
        plane.wait_ready()

    _start(plane, ETCD, plane.spawn_etcd, ready)


def restart_etcd(plane: controlplane.ControlPlane, *, crash: bool = False) -> None:
    stop_etcd(plane, crash=crash)
    start_etcd(plane)


def pause(plane: controlplane.ControlPlane, name: str) -> None:
    """SIGSTOP a process: it holds its connections and answers nothing (a hung server)."""
    _wait_controllers_started(plane)
    os.killpg(plane.processes[name].pid, signal.SIGSTOP)


def resume(plane: controlplane.ControlPlane, name: str) -> None:
    """SIGCONT a paused process; it carries on where it stopped (no wait for readiness)."""
    os.killpg(plane.processes[name].pid, signal.SIGCONT)


def etcd_revision(plane: controlplane.ControlPlane) -> int:
    """etcd's current revision: the resourceVersion of the newest write."""
    # Any key will do: every response's header carries the store's revision.
    answer = _etcd(plane, "/v3/kv/range", {"key": _b64(b"\0"), "count_only": True})
    return int(answer["header"]["revision"])


def compact_etcd(plane: controlplane.ControlPlane, revision: int | None = None) -> int:
    """Drop etcd's history before `revision` (default: the current one) and return it.

    Physical: the call returns once the old revisions are gone from the store. A revision
    at or below an earlier compaction (kube-apiserver compacts every 5 min) is already gone,
    which is what the caller asked for, so that is no error.
    """
    revision = etcd_revision(plane) if revision is None else revision
    try:
        _etcd(plane, "/v3/kv/compaction", {"revision": revision, "physical": True})
    except urllib.error.HTTPError as exc:
        if "has been compacted" not in exc.read().decode(errors="replace"):
            raise
    return revision


def expire_resource_versions(plane: controlplane.ControlPlane) -> int:
    """Make every watch from an older resourceVersion fail with 410 Gone, as after a long
    disconnection: compact etcd to its current revision, then restart kube-apiserver.
    Returns the revision compacted to.

    Compaction alone does not do it. kube-apiserver serves a watch that carries a
    resourceVersion from its watch cache, an in-memory history per resource that ignores
    etcd's compaction: at least 100 events, grown while the oldest is younger than 75 s
    (k8s.io/apiserver v0.34 storage/cacher/watch_cache.go), so an old watch replays its
    missed events instead of failing; a list at an exact old version is served from the
    cache's snapshots too. A restarted cache starts from a list at the current revision and
    answers an older watch with 410 "too old resource version" (a restart alone does that);
    it passes an exact old list to etcd, which answers 410 only once compacted.
    """
    revision = compact_etcd(plane)
    restart_apiserver(plane)
    return revision


def _start(
    plane: controlplane.ControlPlane,
    name: str,
    spawn: Callable[[], None],
    ready: Callable[[], None],
) -> None:
    deadline = time.monotonic() + PORT_RETRY
    while True:
        spawn()
        try:
            ready()
        except RuntimeError as exc:  # a process exited (ControlPlane.wait_ready)
            exited = plane.processes[name].poll() is not None
            taken = "address already in use" in str(exc)
            if not (exited and taken) or time.monotonic() > deadline:
                raise
            del plane.processes[name]
            time.sleep(0.5)
        else:
            plane.save_state()
            return


def _wait_controllers_started(plane: controlplane.ControlPlane) -> None:
    """kube-controller-manager exits if the API server is not healthy within 10 s of its
    own start (it is spawned last, as start() returns); once its controllers run, it
    outlives any outage. Its /healthz lists them from then on."""
    proc = plane.processes.get(CONTROLLER_MANAGER)
    if proc is None:
        return
    url = f"https://{controlplane.LOOPBACK}:{plane.controller_manager_port}/healthz?verbose"
    # Its serving certificate is self-signed in memory: nothing to verify it with.
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + controlplane.READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{CONTROLLER_MANAGER} exited with {proc.returncode}: "
                f"{plane.tail(CONTROLLER_MANAGER)}"
            )
        try:
            with urllib.request.urlopen(url, context=insecure, timeout=2) as answer:
                if "-controller ok" in answer.read().decode():
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        time.sleep(0.1)
    raise TimeoutError(
        f"{CONTROLLER_MANAGER} started no controller: {plane.tail(CONTROLLER_MANAGER)}"
    )


def _wait_etcd_healthy(plane: controlplane.ControlPlane) -> None:
    proc = plane.processes[ETCD]
    deadline = time.monotonic() + controlplane.READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with {proc.returncode}: {plane.tail(ETCD)}")
        try:
            with urllib.request.urlopen(f"{plane.etcd_url}/health", timeout=2) as answer:
                if json.load(answer).get("health") == "true":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass  # not listening yet, or no leader yet (503)
        time.sleep(0.1)
    raise TimeoutError(f"etcd not healthy after {controlplane.READY_TIMEOUT}s: {plane.tail(ETCD)}")


def _etcd(plane: controlplane.ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{plane.etcd_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
        result: dict[str, Any] = json.load(answer)
    return result


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
