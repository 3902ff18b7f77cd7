"""A whole kubenova on a fresh control plane: controller and fake-driver agents as real
processes, driven with kubectl like a user would. One per test, so tests never share
hypervisors or claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hack import controlplane

from kubenova.agent import transfer
from tests import kube

FAST = [  # short retry and heartbeat periods so scenarios take seconds, not minutes
    "--retry-base-seconds=0.5",
    "--retry-cap-seconds=2",
    "--service-down-time-seconds=6",
]


@dataclasses.dataclass
class Process:
    name: str
    argv: list[str]
    log: pathlib.Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        argv = self.argv
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
            )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.send_signal(signal.SIGCONT)  # a paused process handles SIGTERM once it runs
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP: the process holds its connections and does nothing (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Env:
    def __init__(self, directory: pathlib.Path, *, audit: bool = False) -> None:
        """`audit`: the API server logs who wrote kubenova's objects (plane.audit_events())."""
        self.dir = directory
        self.plane = controlplane.ControlPlane(directory / "controlplane", audit=audit).start()
        self.kubectl = kube.Kubectl(self.plane.kubeconfig)
        kube.install_crds(self.kubectl)
        self.kubectl("apply", "-f", str(kube.SAMPLES / "flavors.yaml"))
        self.controller: Process | None = None
        # Every controller replica by name; `controller` is the first one (self.controller).
        self.controllers: dict[str, Process] = {}
        self.agents: dict[str, Process] = {}

    def _process(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        environ = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig), **(env or {})}
        argv = [sys.executable, "-m", "kubenova.cli", *args]
        return Process(name, argv, self.dir / f"{name}.log", environ)

    def start_controller(
        self,
        *args: str,
        fault: str = "",
        webhook: bool = True,
        environ: dict[str, str] | None = None,
        name: str = "controller",
    ) -> Process:
        """A controller replica; another `name` starts a second one beside the first. Each
        managed webhook server has its certificates in a directory of its own and, once it
        answers, points the one webhook configuration at itself."""
        # Its own identity (hack/controlplane.py): the label policy exempts only the controller.
        env = {
            "KUBECONFIG": str(self.plane.controller_kubeconfig),
            **(environ or {}),
            **({"KUBENOVA_FAULT": fault} if fault else {}),
        }
        certs = self.dir / ("webhook" if name == "controller" else f"webhook-{name}")
        hook = [f"--webhook-port={controlplane.free_port()}", f"--webhook-cert-dir={certs}"]
        proc = self._process(name, ["controller", *FAST, *(hook if webhook else []), *args], env)
        self.controllers[name] = proc.start()
        if name == "controller":
            self.controller = proc
        return proc

    def start_agent(
        self,
        node: str,
        capacity: str = "vcpus=8,memoryMiB=16384,diskGiB=200",
        *args: str,
        fault: str = "",
        debug: bool = False,
        environ: dict[str, str] | None = None,
    ) -> Process:
        """An agent with the fake driver, whose hypervisor state lives in a file."""
        driver = ["fake", f"--capacity={capacity}", f"--state-file={self.state_file(node)}"]
        return self._agent(node, [*driver, *args], fault=fault, debug=debug, env=environ)

    def start_libvirt_agent(
        self,
        node: str,
        *args: str,
        fault: str = "",
        shared_libvirtd: bool = False,
        instances_of: str = "",
    ) -> Process:
        """An agent with the real libvirt driver (TCG guests) and its own instancesPath.

        `shared_libvirtd`: this machine's one libvirtd hosts several simulated nodes, so the
        agent prefixes its domains with the node name (two nodes never share a domain) and
        serves disks to the other agents, as on two real nodes. `instances_of`: use that
        node's instancesPath (shared storage, as NFS would give two nodes)."""
        driver = [
            "libvirt",
            "--virt-type=qemu",
            f"--instances-path={self.instances_path(instances_of or node)}",
            f"--images-path={self.dir / 'images'}",
        ]
        if shared_libvirtd:
            driver += [
                f"--libvirt-domain-prefix={node}",
                f"--transfer-port={controlplane.free_port()}",
                f"--transfer-key-file={transfer.ensure_key_file(self.dir / 'transfer.key')}",
            ]
        return self._agent(node, [*driver, *args], fault=fault)

    def _agent(
        self,
        node: str,
        args: list[str],
        *,
        fault: str,
        debug: bool = False,
        env: dict[str, str] | None = None,
    ) -> Process:
        env = {**(env or {}), **({"KUBENOVA_FAULT": fault} if fault else {})}
        if debug:
            env["KUBENOVA_LOG_LEVEL"] = "DEBUG"
        argv = ["agent", "--node", node, "--heartbeat-interval-seconds=1", "--driver", *args]
        agent = self._process(f"agent-{node}", argv, env).start()
        self.agents[node] = agent
        self.wait_for(lambda: self.hypervisor_up(node), what=f"hypervisor {node} up")
        return agent

    def instances_path(self, node: str) -> pathlib.Path:
        return self.dir / f"instances-{node}"

    def state_file(self, node: str) -> pathlib.Path:
        return self.dir / f"hypervisor-{node}.json"

    def guests(self, node: str) -> dict[str, Any]:
        """What the fake hypervisor of `node` holds, as `virsh list --all` would show."""
        path = self.state_file(node)
        return json.loads(path.read_text()) if path.exists() else {}

    def close(self) -> None:
        for proc in [*self.agents.values(), self.controller, *self.controllers.values()]:
            if proc:
                proc.stop()
        self._destroy_guests()
        self.plane.stop()

    def _destroy_guests(self) -> None:
        """libvirtd outlives the test: destroy the real guests this test's agents made."""
        for path in self.dir.glob("instances-*"):
            from kubenova.drivers import libvirt  # noqa: PLC0415 - only where libvirt is used

            node = path.name.removeprefix("instances-")
            driver = libvirt.LibvirtDriver(uri="qemu:///system", instances_path=path)
            shared = libvirt.LibvirtDriver(
                uri="qemu:///system", instances_path=path, domain_prefix=node
            )
            for uuid in asyncio.run(driver.list_guests()):
                asyncio.run(driver.destroy(uuid))
                asyncio.run(shared.destroy(uuid))

    def logs(self) -> str:
        controllers = {id(p): p for p in [self.controller, *self.controllers.values()] if p}
        procs = [*controllers.values(), *self.agents.values()]
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs)

    # --- reading, as a user would ------------------------------------------------------------

    def instance(self, name: str) -> dict[str, Any]:
        return self.kubectl.get_json("instance", name)  # type: ignore[no-any-return]

    def phase(self, name: str) -> str | None:
        phase: str | None = self.instance(name).get("status", {}).get("phase")
        return phase

    def hypervisor(self, node: str) -> dict[str, Any]:
        return self.kubectl.get_json("hypervisor", node)  # type: ignore[no-any-return]

    def hypervisor_up(self, node: str) -> bool:
        result = self.kubectl.run("get", "hypervisor", node, "-o", "json")
        return result.ok and json.loads(result.stdout).get("status", {}).get("state") == "up"

    def usage(self, node: str) -> dict[str, int]:
        return self.hypervisor(node).get("status", {}).get("usage", {})  # type: ignore[no-any-return]

    def migrations(self) -> list[dict[str, Any]]:
        return self.kubectl.get_json("migrations")["items"]  # type: ignore[no-any-return]

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.kubectl.get_json("events", "--field-selector", f"involvedObject.name={name}")[
            "items"
        ]
        return [(e["type"], e["reason"], e["message"]) for e in items]

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 60, what: str = "") -> Any:
        try:
            return kube.poll(predicate, timeout=timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what or predicate}\n{self.logs()}"
            ) from None

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            inst = self.instance(name)
            st = inst.get("status", {})
            return inst if st.get("phase") == phase and not st.get("taskState") else None

        return self.wait_for(reached, timeout=timeout, what=f"{name} {phase}")  # type: ignore[no-any-return]

    # --- acting, as a user would -------------------------------------------------------------

    def create(self, name: str, flavor: str = "m1.tiny", **spec: Any) -> None:
        manifest = {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Instance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"flavor": flavor, "image": "cirros", **spec},
        }
        result = self.kubectl.apply(manifest)
        assert result.ok, result.stderr

    def resize(self, name: str, flavor: str) -> kube.Result:
        return self.kubectl.run(
            "patch",
            "instance",
            name,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"flavor": flavor}}),
        )

    def annotate(self, name: str, key: str, value: str) -> None:
        self.kubectl(
            "annotate", "--overwrite", "instance", name, f"compute.kubenova.io/{key}={value}"
        )


@contextlib.contextmanager
def running(directory: pathlib.Path, *, audit: bool = False) -> Iterator[Env]:
    env = Env(directory, audit=audit)
    try:
        yield env
    finally:
        env.close()
