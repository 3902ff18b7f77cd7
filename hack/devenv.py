"""`make up` / `make down`: the embedded default environment a user drives with kubectl.

`up` starts the local control plane in `.kubenova/` (repo root), installs the CRDs and the
sample flavors, and prints the `export KUBECONFIG=...` line. It returns with everything
left running in the background; `down` stops all of it and removes the etcd data.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

from hack import controlplane

REPO = controlplane.REPO
STATE_DIR = REPO / ".kubenova"


def kubectl(kubeconfig: pathlib.Path, *args: str) -> None:
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], check=True, stdout=subprocess.DEVNULL
    )


def up(state_dir: pathlib.Path) -> int:
    began = time.monotonic()
    if (state_dir / "state.json").exists():
        print("replacing the environment an earlier `make up` left running", file=sys.stderr)
        controlplane.down(state_dir)
    plane = controlplane.ControlPlane(state_dir, detached=True).start()
    samples = REPO / "crds" / "samples"
    crds = [arg for path in sorted((REPO / "crds").glob("*.yaml")) for arg in ("-f", str(path))]
    kubectl(plane.kubeconfig, "apply", *crds)
    kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *crds)
    kubectl(plane.kubeconfig, "apply", "-f", str(samples / "flavors.yaml"))
    print(
        f"kubenova is up in {time.monotonic() - began:.1f}s "
        f"(control plane {plane.startup_seconds:.1f}s) at {plane.server}",
        file=sys.stderr,
    )
    print(f"logs: {plane.log_dir}   stop: make down", file=sys.stderr)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def down(state_dir: pathlib.Path) -> int:
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
