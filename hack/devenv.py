"""`make up` / `make down`: the embedded default environment a user drives with kubectl.

`up` starts the local control plane in `.kubenova/` (repo root), installs the CRDs and the
sample flavors, starts the controller (with its validating webhook) and two agents
(node-a, node-b) and prints the `export KUBECONFIG=...` line. It returns with everything
running in the background; `down` stops all of it.

The agents use the libvirt driver when this machine's libvirtd answers (real TCG guests;
both simulated nodes share the one libvirtd, so each prefixes its domains with its node
name and serves its disks to the other on a port of its own), else the fake driver, and
say which. `KUBENOVA_DRIVER=fake make up` forces the fake driver.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from hack import controlplane
from kubenova.agent import transfer

REPO = controlplane.REPO
STATE_DIR = REPO / ".kubenova"
NODES = {  # name -> fake capacity: two modest nodes, so cross-node moves are easy to see
    "node-a": "vcpus=8,memoryMiB=16384,diskGiB=200",
    "node-b": "vcpus=8,memoryMiB=16384,diskGiB=200",
}
READY_TIMEOUT = 60.0
LIBVIRT_URI = "qemu:///system"
DEMO_IMAGE = "cirros"  # the image crds/samples/instance.yaml names
DEMO_MARKER = b"kubenova-demo-disk"  # the guest prints it from its disk at every boot


def kubectl(kubeconfig: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout


def _spawn(
    state_dir: pathlib.Path, name: str, args: list[str], env: dict[str, str] | None = None
) -> int:
    log = (state_dir / "logs" / f"{name}.log").open("ab")
    env = {**os.environ, "KUBECONFIG": str(state_dir / "kubeconfig"), **(env or {})}
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


def install_label_policy(kubeconfig: pathlib.Path) -> None:
    """The chart's label policy (templates/label-policy.yaml, the one source), rendered by
    helm for the local controller's identity: only it may change kubenova's labels."""
    helm = (
        subprocess.run(
            ["bash", str(REPO / "hack" / "install-helm.sh")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    rendered = subprocess.run(
        [
            helm,
            "template",
            "kubenova",
            str(REPO / "charts" / "kubenova"),
            "--show-only",
            "templates/label-policy.yaml",
            "--set",
            f"labelPolicy.controllerUsers={{{controlplane.CONTROLLER_USER}}}",
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/kubenova-helm/cache"},
    ).stdout
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
        input=rendered,
        check=True,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    _wait_enforced(kubeconfig)


def _wait_enforced(kubeconfig: pathlib.Path) -> None:
    """A stored policy is not yet an enforced one (the API server loads it asynchronously):
    wait until a server-side dry run of what it refuses is refused."""
    labels = {"compute.kubenova.io/node": "probe"}
    probe = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "label-policy-probe", "namespace": "default", "labels": labels},
        "spec": {"flavor": "m1.tiny", "image": "cirros"},
    }
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        tried = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "create", "--dry-run=server", "-f", "-"],
            check=False,
            input=json.dumps(probe),
            capture_output=True,
            text=True,
        )
        if "set by the kubenova controller only" in tried.stderr:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the label policy is not enforced after {READY_TIMEOUT}s")


def _wait_hypervisors(kubeconfig: pathlib.Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        out = json.loads(kubectl(kubeconfig, "get", "hypervisors", "-o", "json"))
        states = {i["metadata"]["name"]: i.get("status", {}).get("state") for i in out["items"]}
        if all(states.get(n) == "up" for n in NODES):
            return
        time.sleep(0.5)
    raise TimeoutError(f"hypervisors not up after {READY_TIMEOUT}s; see {kubeconfig.parent}/logs")


def libvirt_problem(uri: str = LIBVIRT_URI) -> str | None:
    """Why the libvirt driver cannot run here, or None when libvirtd answers."""
    if os.environ.get("KUBENOVA_DRIVER", "libvirt") == "fake":
        return "KUBENOVA_DRIVER=fake"
    try:
        import libvirt  # noqa: PLC0415 - optional: the fake driver needs none of it
    except ImportError as exc:
        return f"libvirt-python is not installed ({exc})"
    try:
        libvirt.registerErrorHandler(lambda *_: None, None)  # no stderr noise on failure
        libvirt.open(uri).close()
    except libvirt.libvirtError as exc:
        return f"libvirtd does not answer at {uri} ({exc.get_error_message()})"
    return None


def demo_image(state_dir: pathlib.Path) -> pathlib.Path:
    """`.kubenova/images/cirros`: the tiny test guest (a Debian kernel and a busybox
    initramfs, hack/build-guest-image.sh), with a 1 GiB disk whose first bytes are a marker."""
    built = subprocess.run(
        ["bash", str(REPO / "hack" / "build-guest-image.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()[-1]
    image = state_dir / "images" / DEMO_IMAGE
    image.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.img"):
        (image / name).unlink(missing_ok=True)
        (image / name).symlink_to(pathlib.Path(built) / name)
    disk = image / "disk.qcow2"
    if not disk.exists():
        raw = image / "disk.raw"
        with raw.open("wb") as f:
            f.write(DEMO_MARKER)
            f.truncate(1024**3)  # sparse: costs a few KiB
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)],
            check=True,
        )
        raw.unlink()
    return image


def agent_args(state_dir: pathlib.Path, node: str, driver: str) -> list[str]:
    if driver == "fake":
        return [
            "--driver=fake",
            f"--capacity={NODES[node]}",
            f"--state-file={state_dir / 'hypervisors' / f'{node}.json'}",
        ]
    return [
        "--driver=libvirt",
        "--virt-type=qemu",  # KVM guests hang at boot on these machines; TCG works
        f"--instances-path={state_dir / 'instances' / node}",
        f"--images-path={state_dir / 'images'}",
        f"--libvirt-domain-prefix={node}",
        f"--transfer-port={controlplane.free_port()}",
        f"--transfer-key-file={transfer.ensure_key_file(state_dir / 'transfer.key')}",
    ]


def destroy_guests(instances: pathlib.Path, uri: str = LIBVIRT_URI) -> int:
    """Destroy and undefine the domains whose disks live under `instances`: this
    environment's, never another `make up`'s or a test's on the same libvirtd."""
    import libvirt  # noqa: PLC0415 - only when the libvirt driver ran

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors are handled below
    conn: Any = libvirt.open(uri)
    removed = 0
    try:
        for dom in conn.listAllDomains():
            try:
                if f"'{instances}/" not in dom.XMLDesc().replace('"', "'"):
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
                removed += 1
            except libvirt.libvirtError:
                if _defined(conn, dom.UUIDString()):
                    raise  # still there: a real failure
                # else another environment removed it while we looked: not ours to mind
    finally:
        conn.close()
    return removed


def _defined(conn: Any, uuid: str) -> bool:
    import libvirt  # noqa: PLC0415 - only when the libvirt driver ran

    try:
        conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError:
        return False
    return True


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
    install_label_policy(plane.kubeconfig)
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
            # Its own identity: the label policy lets only the controller change labels.
            env={"KUBECONFIG": str(plane.controller_kubeconfig)},
        )
    }
    problem = libvirt_problem()
    driver = "fake" if problem else "libvirt"
    if problem:
        print(f"using the fake driver: {problem}", file=sys.stderr)
    else:
        demo_image(state_dir)
    (state_dir / "hypervisors").mkdir(exist_ok=True)
    for node in NODES:
        pids[node] = _spawn(
            state_dir,
            f"agent-{node}",
            [
                "agent",
                f"--node={node}",
                "--heartbeat-interval-seconds=5",
                f"--metrics-port={metrics[node]}",
                *agent_args(state_dir, node, driver),
            ],
            # The demo guest powers off within a second of the ACPI button once booted; while
            # it boots (~10 s under TCG) it cannot, and Nova's 60 s default would stall a
            # resize issued right after ACTIVE.
            env={"KUBENOVA_SHUTDOWN_TIMEOUT_SECONDS": "10"},
        )
    (state_dir / "kubenova.json").write_text(json.dumps({"pids": pids, "driver": driver}))
    _wait_hypervisors(plane.kubeconfig)
    what = "libvirt driver, TCG guests" if driver == "libvirt" else "fake driver"
    print(
        f"kubenova is up in {time.monotonic() - began:.1f}s "
        f"(control plane {plane.startup_seconds:.1f}s) at {plane.server}: "
        f"controller and agents {', '.join(NODES)} ({what})",
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
    try:
        if components.exists():
            started = json.loads(components.read_text())
            controlplane.stop_pids([(pid, "kubenova.cli") for pid in started["pids"].values()])
            if started["driver"] == "libvirt":
                removed = destroy_guests(state_dir / "instances")
                print(f"destroyed {removed} guest(s)", file=sys.stderr)
            components.unlink()
    finally:  # whatever failed above, the detached control plane must not outlive `down`
        stopped = controlplane.down(state_dir)
    print("kubenova stopped" if stopped else "nothing to stop", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.devenv")
    # demo-image: only build the image `cirros` under --dir and print its directory (the
    # kind cluster copies it onto its workers: hack/kind/cluster.sh).
    parser.add_argument("action", choices=["up", "down", "demo-image"])
    parser.add_argument("--dir", type=pathlib.Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    state_dir = args.dir.resolve()  # agents and libvirtd need absolute paths
    if args.action == "demo-image":
        print(demo_image(state_dir))
        return 0
    return up(state_dir) if args.action == "up" else down(state_dir)


if __name__ == "__main__":
    sys.exit(main())
