"""A real local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

No Docker: the binaries are built from Go modules by `hack/build-controlplane.sh` into a
cache outside the repository (or taken from KUBEBUILDER_ASSETS). Everything listens on
127.0.0.1 on free ports, so several control planes can run side by side (one per pytest
worker, plus a developer's `make up`). State lives in one directory: certificates, the
admin kubeconfig, logs, etcd data and `state.json` (pids and ports, read by `down`).
Ports, certificates and the etcd data directory are chosen once by the first start and kept,
so hack/controlplane_faults.py can stop and start a process under clients that stay connected.

    python -m hack.controlplane up   --dir .kubenova    # start, print the kubeconfig path
    python -m hack.controlplane down --dir .kubenova    # stop everything `up` started
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from kubenova import pki

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-controlplane.sh"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 60.0  # cold page cache on 2 cores: the apiserver has been seen at ~15 s
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
ADMIN_USER = "kubenova-admin"
# The local controller's own identity (`controller.kubeconfig`): the label policy lets only
# the controller change kubenova's labels, so it must not share the user's.
CONTROLLER_USER = "kubenova-controller"
# `audit=True`: who wrote kubenova's objects and leases, and nothing else (reads and core
# objects would drown them). Only ResponseComplete: RequestReceived would log each write twice.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete"],
            "resources": [{"group": "compute.kubenova.io"}, {"group": "coordination.k8s.io"}],
        },
        {"level": "None"},
    ],
}


def binaries() -> pathlib.Path:
    """Directory holding etcd, kube-apiserver and kube-controller-manager (built once)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return pathlib.Path(out.strip().splitlines()[-1])


PORT_ATTEMPTS = 3  # starts on fresh ports when a chosen one was taken meanwhile


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class State:
    """What `down` needs to stop a control plane started by another process."""

    pids: dict[str, int]
    apiserver_port: int
    kubeconfig: str


def _alive(pid: int, needle: str) -> bool:
    """True if `pid` still runs a command line containing `needle` (not a recycled pid)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return needle.encode() in cmdline


def stop_pids(procs: list[tuple[int, str]]) -> None:
    """SIGTERM each (pid, needle) process group in reverse start order, then SIGKILL what
    is left after STOP_GRACE. `needle` must be in its command line, or it is not ours."""
    for pid, needle in reversed(procs):
        if _alive(pid, needle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(_alive(p, n) for p, n in procs):
        time.sleep(0.1)
    for pid, needle in procs:
        if _alive(pid, needle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for pid, _ in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


class ControlPlane:
    """Start and stop one control plane whose files live under `directory`."""

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        bin_dir: pathlib.Path | None = None,
        detached: bool = False,
        audit: bool = False,
    ) -> None:
        """`detached` processes outlive this one (make up); others die with it (tests).
        `audit` makes kube-apiserver log AUDIT_POLICY's writes to `audit_log`."""
        self.dir = directory.resolve()
        self.detached = detached
        self.audit = audit
        self.bin_dir = bin_dir
        self.pki_dir = self.dir / "pki"
        self.log_dir = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.controller_kubeconfig = self.dir / "controller.kubeconfig"
        self.audit_log = self.log_dir / "audit.log"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.apiserver_port = 0
        self.etcd_client_port = 0
        self.etcd_peer_port = 0
        self.etcd_data = pathlib.Path()
        self.controller_manager_port = 0
        self.certs: dict[str, pathlib.Path] = {}
        self.startup_seconds = 0.0

    # --- start -----------------------------------------------------------------------------

    def start(self, *, controller_manager: bool = True) -> ControlPlane:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return self._start(controller_manager=controller_manager)
            except RuntimeError as exc:
                # free_port() cannot hold a port: another process (a parallel test's
                # server) may bind it before ours does. Start again on fresh ports.
                if "address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _start(self, *, controller_manager: bool) -> ControlPlane:
        began = time.monotonic()
        self.bin_dir = self.bin_dir or binaries()
        for sub in (self.pki_dir, self.log_dir):
            sub.mkdir(parents=True, exist_ok=True)
        try:
            self.certs = self._certificates()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig(self.certs)
            self.wait_ready()
            if controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self.save_state()
        return self

    def _certificates(self) -> dict[str, pathlib.Path]:
        ca = pki.Authority.create(self.pki_dir, "ca")
        serving = ca.issue(
            self.pki_dir,
            "apiserver",
            common_name="kube-apiserver",
            server_ips=(LOOPBACK, "10.0.0.1"),
            server_dns=("localhost", "kubernetes", "kubernetes.default.svc"),
        )
        admin = ca.issue(
            self.pki_dir, "admin", common_name=ADMIN_USER, organizations=("system:masters",)
        )
        controller = ca.issue(
            self.pki_dir,
            "controller",
            common_name=CONTROLLER_USER,
            organizations=("system:masters",),
        )
        sa = pki.service_account_keys(self.pki_dir)
        return {
            "ca": ca.path,
            "serving_cert": serving.cert,
            "serving_key": serving.key,
            "admin_cert": admin.cert,
            "admin_key": admin.key,
            "controller_cert": controller.cert,
            "controller_key": controller.key,
            "sa_pub": sa.cert,
            "sa_key": sa.key,
        }

    def _spawn(self, name: str, argv: list[str]) -> None:
        if not self.detached and shutil.which("setpriv"):
            # Die with the test process even if it is killed before it can clean up.
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        log = (self.log_dir / f"{name}.log").open("ab")
        # A session of its own: `down` (another process) can kill the whole group.
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _start_etcd(self) -> None:
        self.etcd_client_port, self.etcd_peer_port = free_port(), free_port()
        # tmpfs when there is one: etcd's fsyncs dominate apiserver latency on a disk.
        shm = pathlib.Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.dir
        self.etcd_data = pathlib.Path(tempfile.mkdtemp(prefix="kubenova-etcd-", dir=base))
        (self.dir / "etcd-data").unlink(missing_ok=True)
        (self.dir / "etcd-data").symlink_to(self.etcd_data)
        self.spawn_etcd()

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.etcd_client_port}"

    def spawn_etcd(self) -> None:
        """Run etcd on the ports and data directory the first start chose (no wait)."""
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                str(self._bin("etcd")),
                "--name=kubenova",
                f"--data-dir={self.etcd_data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kubenova={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                # 0 disables the periodic metrics listener we never read.
                "--listen-metrics-urls=",
            ],
        )

    def _bin(self, name: str) -> pathlib.Path:
        assert self.bin_dir is not None, "start() first"
        return self.bin_dir / name

    def _start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        if self.audit:
            (self.dir / "audit-policy.json").write_text(json.dumps(AUDIT_POLICY, indent=2))
        self.spawn_apiserver()

    def spawn_apiserver(self) -> None:
        """Run kube-apiserver on the port and certificates the first start chose (no wait)."""
        certs = self.certs
        policy = self.dir / "audit-policy.json"  # JSON is YAML, as for the kubeconfig
        audit = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]
        self._spawn(
            "kube-apiserver",
            [
                str(self._bin("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.apiserver_port}",
                # Loopback advertise address with no endpoint reconciler: sandboxes have no
                # default route, and the reconciler would reject a loopback endpoint.
                f"--advertise-address={LOOPBACK}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.pki_dir}",
                f"--tls-cert-file={certs['serving_cert']}",
                f"--tls-private-key-file={certs['serving_key']}",
                f"--client-ca-file={certs['ca']}",
                f"--service-account-issuer=https://{LOOPBACK}:{self.apiserver_port}",
                f"--service-account-key-file={certs['sa_pub']}",
                f"--service-account-signing-key-file={certs['sa_key']}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # Tests create Events in bursts; keep the defaults otherwise.
                "--event-ttl=1h",
                # On SIGTERM, answer 429 Retry-After while short requests drain, then give open
                # connections (watches) 2 s, not --request-timeout (60 s): with a controller
                # watching, a graceful stop would otherwise always end in SIGKILL.
                "--shutdown-send-retry-after=true",
                *(audit if self.audit else []),
            ],
        )

    def _start_controller_manager(self) -> None:
        # Garbage collection (ownerReferences), namespace deletion and service-account
        # tokens need it; Deployments and DaemonSets are reconciled too (no kubelet runs them).
        self.controller_manager_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(self._bin("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.controller_manager_port}",
                f"--root-ca-file={self.certs['ca']}",
                f"--service-account-private-key-file={self.certs['sa_key']}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle",
            ],
        )

    def _write_kubeconfig(self, certs: dict[str, pathlib.Path]) -> None:
        for path, user, prefix in (
            (self.kubeconfig, ADMIN_USER, "admin"),
            (self.controller_kubeconfig, CONTROLLER_USER, "controller"),
        ):
            self._write_kubeconfig_for(
                path,
                user,
                {"ca": certs["ca"], "cert": certs[f"{prefix}_cert"], "key": certs[f"{prefix}_key"]},
            )

    def _write_kubeconfig_for(
        self, path: pathlib.Path, user: str, certs: dict[str, pathlib.Path]
    ) -> None:
        def b64(path: pathlib.Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubenova",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(certs["ca"]),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(certs["cert"]),
                        "client-key-data": b64(certs["key"]),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kubenova",
                    "context": {
                        "cluster": "kubenova",
                        "user": user,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "kubenova",
        }
        # JSON is YAML; no dependency needed for a file kubectl and clients read.
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver_port}"

    def admin_context(self) -> ssl.SSLContext:
        """TLS for raw HTTPS requests to the API server as the admin."""
        ctx = ssl.create_default_context(cafile=str(self.certs["ca"]))
        ctx.load_cert_chain(str(self.certs["admin_cert"]), str(self.certs["admin_key"]))
        return ctx

    def wait_ready(self) -> None:
        """Until kube-apiserver's /readyz (etcd included) answers 200; raise if a process died."""
        ctx = self.admin_context()
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"kube-apiserver not ready after {READY_TIMEOUT}s ({last}): "
            f"{self.tail('kube-apiserver')}"
        )

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events so far, oldest first (`audit=True`)."""
        if not self.audit_log.exists():
            return []
        text = self.audit_log.read_text()
        # The apiserver may be writing the last line: keep only the complete ones.
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    # --- stop ------------------------------------------------------------------------------

    def save_state(self) -> None:
        state = State(
            pids={n: p.pid for n, p in self.processes.items()},
            apiserver_port=self.apiserver_port,
            kubeconfig=str(self.kubeconfig),
        )
        (self.dir / "state.json").write_text(json.dumps(dataclasses.asdict(state), indent=2))

    def stop(self) -> None:
        """Stop our own children: their pids cannot be recycled until we reap them."""
        procs = list(reversed(self.processes.values()))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                        # A paused process (controlplane_faults.pause) handles SIGTERM only
                        # once it runs again.
                        os.killpg(proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + STOP_GRACE
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.processes.clear()
        remove_etcd_data(self.dir)
        (self.dir / "state.json").unlink(missing_ok=True)


def remove_etcd_data(directory: pathlib.Path) -> None:
    link = directory / "etcd-data"
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)
        link.unlink()


def down(directory: pathlib.Path) -> bool:
    """Stop the control plane recorded in `directory`; False if none was recorded."""
    path = directory / "state.json"
    if not path.exists():
        return False
    state = State(**json.loads(path.read_text()))
    stop_pids([(pid, name) for name, pid in state.pids.items()])
    remove_etcd_data(directory)
    path.unlink()
    return True


@contextlib.contextmanager
def running(directory: pathlib.Path, **kwargs: bool) -> Iterator[ControlPlane]:
    plane = ControlPlane(directory).start(**kwargs)
    try:
        yield plane
    finally:
        plane.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.controlplane")
    parser.add_argument("action", choices=["up", "down", "build"])
    parser.add_argument("--dir", type=pathlib.Path, default=REPO / ".kubenova")
    args = parser.parse_args(argv)
    if args.action == "build":
        print(binaries())
        return 0
    if args.action == "down":
        print("stopped" if down(args.dir) else f"nothing recorded in {args.dir}")
        return 0
    if (args.dir / "state.json").exists():
        down(args.dir)  # a stale or running plane from an earlier `up`: replace it
    plane = ControlPlane(args.dir, detached=True).start()
    print(f"control plane ready in {plane.startup_seconds:.1f}s at {plane.server}", file=sys.stderr)
    print(plane.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
