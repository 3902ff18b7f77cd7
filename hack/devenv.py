"""`make up` / `make down`: the embedded default environment a user drives with kubectl.

`up` starts the local control plane in `.kubenova/` (repo root), installs the CRDs and the
sample flavors, starts the controller (with its validating webhook) and two agents
(node-a, node-b; fake driver) and prints the `export KUBECONFIG=...` line. It returns
with everything running in the background; `down` stops all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from hack import controlplane

REPO = controlplane.REPO
STATE_DIR = REPO / ".kubenova"
NODES = {  # name -> fake capacity: two modest nodes, so cross-node moves are easy to see
    "node-a": "vcpus=8,memoryMiB=16384,diskGiB=200",
    "node-b": "vcpus=8,memoryMiB=16384,diskGiB=200",
}
READY_TIMEOUT = 60.0


def kubectl(kubeconfig: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout


def _spawn(state_dir: pathlib.Path, name: str, args: list[str]) -> int:
    log = (state_dir / "logs" / f"{name}.log").open("ab")
    env = {**os.environ, "KUBECONFIG": str(state_dir / "kubeconfig")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenova.cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # outlives `make up`; `make down` stops it
    )
    log.close()
    return proc.pid


def _wait_hypervisors(kubeconfig: pathlib.Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        out = json.loads(kubectl(kubeconfig, "get", "hypervisors", "-o", "json"))
        states = {i["metadata"]["name"]: i.get("status", {}).get("state") for i in out["items"]}
        if all(states.get(n) == "up" for n in NODES):
            return
        time.sleep(0.5)
    raise TimeoutError(f"hypervisors not up after {READY_TIMEOUT}s; see {kubeconfig.parent}/logs")


def up(state_dir: pathlib.Path) -> int:
    began = time.monotonic()
    if (state_dir / "state.json").exists():
        print("replacing the environment an earlier `make up` left running", file=sys.stderr)
        down(state_dir)
    plane = controlplane.ControlPlane(state_dir, detached=True).start()
    samples = REPO / "crds" / "samples"
    crds = [arg for path in sorted((REPO / "crds").glob("*.yaml")) for arg in ("-f", str(path))]
    kubectl(plane.kubeconfig, "apply", *crds)
    kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *crds)
    kubectl(plane.kubeconfig, "apply", "-f", str(samples / "flavors.yaml"))
    metrics = {name: controlplane.free_port() for name in ("controller", *NODES)}
    pids = {
        "controller": _spawn(
            state_dir,
            "controller",
            [
                "controller",
                f"--metrics-port={metrics['controller']}",
                f"--webhook-port={controlplane.free_port()}",
                f"--webhook-cert-dir={state_dir / 'webhook'}",
            ],
        )
    }
    (state_dir / "hypervisors").mkdir(exist_ok=True)
    for node, capacity in NODES.items():
        pids[node] = _spawn(
            state_dir,
            f"agent-{node}",
            [
                "agent",
                "--node",
                node,
                "--driver",
                "fake",
                f"--capacity={capacity}",
                f"--state-file={state_dir / 'hypervisors' / f'{node}.json'}",
                "--heartbeat-interval-seconds=5",
                f"--metrics-port={metrics[node]}",
            ],
        )
    (state_dir / "kubenova.json").write_text(json.dumps(pids))
    _wait_hypervisors(plane.kubeconfig)
    print(
        f"kubenova is up in {time.monotonic() - began:.1f}s "
        f"(control plane {plane.startup_seconds:.1f}s) at {plane.server}: "
        f"controller and agents {', '.join(NODES)} (fake driver)",
        file=sys.stderr,
    )
    print(f"logs: {plane.log_dir}   stop: make down", file=sys.stderr)
    print(
        "metrics: "
        + ", ".join(f"{name} http://127.0.0.1:{port}/metrics" for name, port in metrics.items()),
        file=sys.stderr,
    )
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def down(state_dir: pathlib.Path) -> int:
    components = state_dir / "kubenova.json"
    if components.exists():
        pids = json.loads(components.read_text())
        controlplane.stop_pids([(pid, "kubenova.cli") for pid in pids.values()])
        components.unlink()
    stopped = controlplane.down(state_dir)
    print("kubenova stopped" if stopped else "nothing to stop", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.devenv")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=pathlib.Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    return up(args.dir) if args.action == "up" else down(args.dir)


if __name__ == "__main__":
    sys.exit(main())
