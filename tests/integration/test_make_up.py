"""`make up`, the README walkthrough verbatim, and `make down`, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess

import pytest

from tests import kube
from tests.e2e import guest

pytestmark = [pytest.mark.controlplane, pytest.mark.slow]

STATE = kube.REPO / ".kubenova"
DRIVERS = {"libvirt": "libvirt driver, TCG guests", "fake": "fake driver"}
SECTORS_PER_GIB = guest.SECTORS_PER_GIB


def _run(argv: list[str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "KUBECONFIG"))}
    return subprocess.run(
        argv, cwd=kube.REPO, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def walkthrough() -> str:
    """The shell block of the README's walkthrough, exactly as a user would paste it."""
    readme = (kube.REPO / "README.md").read_text()
    section = readme.split("<!-- walkthrough:begin -->")[1].split("<!-- walkthrough:end -->")[0]
    return section.split("```sh")[1].split("```")[0]


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
def test_make_up_readme_walkthrough_then_make_down() -> None:
    up = _run(["make", "up"])
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
        pids = json.loads((STATE / "state.json").read_text())["pids"]
        started = json.loads((STATE / "kubenova.json").read_text())
        pids |= started["pids"]
        if os.environ.get("CI"):  # make test installs and starts libvirtd
            assert started["driver"] == "libvirt", up.stderr
        assert f"({DRIVERS[started['driver']]})" in up.stderr

        walk = _run(["bash", "-euo", "pipefail", "-c", walkthrough()], timeout=600)
        assert walk.returncode == 0, f"{walk.stdout}\n{walk.stderr}"
        assert "confirmed" in walk.stdout
        assert "reverted" in walk.stdout
        demo = kubectl.get_json("instance", "demo")
        assert (demo["spec"]["flavor"], demo["status"]["phase"]) == ("m1.small", "ACTIVE")
        if started["driver"] == "libvirt":
            # The guest itself, after resize, revert and a cold migrate: m1.small's 20 GiB
            # disk with the image's marker, on the node the instance says it runs on.
            console = STATE / "instances" / demo["status"]["node"] / "console"
            log = console / f"{demo['status']['uuid']}.log"
            expected = (str(20 * SECTORS_PER_GIB), "kubenova-demo-disk")
            with contextlib.suppress(TimeoutError):  # TCG boots take ~10 s
                kube.poll(lambda: _last_report(log) == expected, timeout=120)
            assert _last_report(log) == expected
    finally:
        down = _run(["make", "down"])
    assert down.returncode == 0, down.stderr
    assert not (STATE / "state.json").exists()
    assert _processes_mentioning(STATE) == []
    for pid in pids.values():
        assert not _running(pid), f"pid {pid} still runs"
    # Only this environment's guests: tests beside this one run their own on the same libvirtd.
    left = _domains_with_disks_under(STATE / "instances")
    assert left == [], f"{left} outlived make down:\n{down.stderr}"


def _last_report(console: pathlib.Path) -> tuple[str, str] | None:
    """(disk sectors, marker) from the guest's last boot report on its serial console."""
    text = console.read_text(errors="replace") if console.exists() else ""
    found = guest.LINE.findall(text)
    return (found[-1][2], found[-1][3]) if found else None


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=False
    )


def _domains_with_disks_under(directory: pathlib.Path) -> list[str]:
    """The domains libvirtd still defines whose disks live under `directory`."""
    listed = _virsh("list", "--all", "--name")
    if listed.returncode != 0:
        return []  # no libvirtd here: the fake driver ran, there are no guests to look for
    # A domain another test removes between the two calls has no XML: not ours either way.
    return [d for d in listed.stdout.split() if f"{directory}/" in _virsh("dumpxml", d).stdout]


def _running(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
