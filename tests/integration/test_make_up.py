"""`make up` / `make down` exactly as the README tells a user to run them."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from tests import kube

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

STATE = kube.REPO / ".kubenova"


def _make(target: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        ["make", "-C", str(kube.REPO), target],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=env,
    )


def _processes_mentioning(path: pathlib.Path) -> list[str]:
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.skipif(
    (STATE / "state.json").exists(),
    reason="a developer's `make up` is running in this checkout; not replacing it (CI has none)",
)
def test_make_up_then_down() -> None:
    up = _make("up")
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={STATE / 'kubeconfig'}" in up.stdout.splitlines()
        kubectl = kube.Kubectl(STATE / "kubeconfig")

        header, *rows = kubectl("get", "flavors").splitlines()
        assert header.split() == ["NAME", "VCPUS", "MEMORY", "DISK", "AGE"]
        assert {r.split()[0] for r in rows} == {
            "m1.tiny",
            "m1.small",
            "m1.medium",
            "m1.large",
            "m1.xlarge",
        }
        assert "Changing it resizes the instance" in kubectl("explain", "instance.spec.flavor")
        pids = json.loads((STATE / "state.json").read_text())["pids"]
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    finally:
        down = _make("down")
    assert down.returncode == 0, down.stderr
    assert not (STATE / "state.json").exists()
    assert _processes_mentioning(STATE) == []
    for pid in pids.values():
        assert not pathlib.Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still runs"


def _zombie(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
