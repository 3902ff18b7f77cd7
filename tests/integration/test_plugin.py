"""`kubectl nova` against `make up` (hack/devenv.py in a directory of its own), run as a
user runs it: `kubectl nova ...` with the venv's bin on PATH."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import kube

# One `make up` for the module, its tests in order on one worker.
pytestmark = [pytest.mark.controlplane, pytest.mark.slow, pytest.mark.xdist_group("plugin")]

BIN = pathlib.Path(sys.executable).parent  # the venv's bin: kubectl-nova is installed there


def _devenv(action: str, directory: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "KUBECONFIG"))}
    return subprocess.run(
        [sys.executable, "-m", "hack.devenv", action, "--dir", str(directory)],
        cwd=kube.REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    directory = tmp_path_factory.mktemp("up")
    up = _devenv("up", directory)
    try:
        assert up.returncode == 0, up.stderr
        yield directory / "kubeconfig"
    finally:
        down = _devenv("down", directory)
        assert down.returncode == 0, down.stderr


def nova(kubeconfig: pathlib.Path, *args: str) -> kube.Result:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig),
    }
    proc = subprocess.run(
        ["kubectl", "nova", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    return kube.Result(proc.returncode, proc.stdout, proc.stderr)


def table(text: str) -> list[dict[str, str]]:
    """Rows of a `kubectl nova` table by header (cells hold no spaces)."""
    header, *rows = text.splitlines()
    keys = header.replace("OLD FLAVOR", "OLD_FLAVOR").replace("NEW FLAVOR", "NEW_FLAVOR").split()
    return [dict(zip(keys, row.split(), strict=True)) for row in rows]


@pytest.fixture(scope="module")
def vm(kubeconfig: pathlib.Path) -> str:
    kubectl = kube.Kubectl(kubeconfig)
    kubectl("apply", "-f", str(kube.SAMPLES / "instance.yaml"))
    kubectl("wait", "instance/demo", "--for=jsonpath={.status.phase}=ACTIVE", "--timeout=60s")
    return "demo"


def test_resize_confirm_then_resize_revert(kubeconfig: pathlib.Path, vm: str) -> None:
    [row] = table(nova(kubeconfig, "list").stdout)
    assert (row["NAME"], row["FLAVOR"], row["STATUS"], row["POWER"]) == (
        vm,
        "m1.tiny",
        "ACTIVE",
        "Running",
    )

    resized = nova(kubeconfig, "resize", vm, "--flavor", "m1.small", "--wait")
    assert resized.returncode == 0, resized.stderr
    assert "resizing m1.tiny -> m1.small" in resized.stdout
    assert resized.stdout.splitlines()[-1].startswith("VERIFY_RESIZE: m1.small on node-")
    [row] = table(nova(kubeconfig, "list").stdout)
    assert (row["FLAVOR"], row["STATUS"], row["TASK"]) == ("m1.small", "VERIFY_RESIZE", "-")
    [mig] = table(nova(kubeconfig, "migrations", vm).stdout)
    assert (mig["TYPE"], mig["OLD_FLAVOR"], mig["NEW_FLAVOR"], mig["STATUS"]) == (
        "resize",
        "m1.tiny",
        "m1.small",
        "finished",
    )

    confirmed = nova(kubeconfig, "confirm", vm, "--wait")
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.splitlines()[-1].startswith("ACTIVE: m1.small on node-")

    assert nova(kubeconfig, "resize", vm, "--flavor", "m1.medium", "--wait").returncode == 0
    reverted = nova(kubeconfig, "revert", vm, "--wait")
    assert reverted.returncode == 0, reverted.stderr
    assert reverted.stdout.splitlines()[-1].startswith("ACTIVE: m1.small on node-")
    assert "(reverted)" in reverted.stdout
    [row] = table(nova(kubeconfig, "list").stdout)
    assert (row["FLAVOR"], row["STATUS"]) == ("m1.small", "ACTIVE")

    rows = table(nova(kubeconfig, "migrations").stdout)
    assert [(r["INSTANCE"], r["OLD_FLAVOR"], r["NEW_FLAVOR"], r["STATUS"]) for r in rows] == [
        (vm, "m1.tiny", "m1.small", "confirmed"),
        (vm, "m1.small", "m1.medium", "reverted"),
    ]


def test_migrate_to_the_other_node(kubeconfig: pathlib.Path, vm: str) -> None:
    [row] = table(nova(kubeconfig, "list").stdout)
    other = "node-b" if row["NODE"] == "node-a" else "node-a"
    moved = nova(kubeconfig, "migrate", vm, "--to", other, "--wait")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[-1].startswith("VERIFY_RESIZE: ")
    assert f" on {other}; keep it with `kubectl nova confirm {vm}`" in moved.stdout
    assert nova(kubeconfig, "confirm", vm, "--wait").returncode == 0
    [row] = table(nova(kubeconfig, "list").stdout)
    assert (row["NODE"], row["STATUS"]) == (other, "ACTIVE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("confirm", "nope"), 'instance "nope" not found'),
        (("resize", "nope", "--flavor", "m1.small"), 'instance "nope" not found'),
        (("migrations", "nope"), 'instance "nope" not found'),
        (("-n", "elsewhere", "list"), "No instances found."),
        (("confirm", "demo"), "instance demo is ACTIVE: there is no resize to confirm"),
        (("revert", "demo"), "instance demo is ACTIVE: there is no resize to revert"),
        (("resize", "demo", "--flavor", "m9.huge"), "flavor m9.huge does not exist"),
        (("resize", "demo", "--flavor", "{flavor}"), "already has flavor {flavor}"),
        (("migrate", "demo", "--to", "node-z", "--wait"), "migrate refused: no valid host"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v)[:40],
)
def test_errors_say_what_is_wrong(
    kubeconfig: pathlib.Path, vm: str, args: tuple[str, ...], message: str
) -> None:
    # The module's tests share one `make up`, but xdist may run them in any order (and set
    # the module up again between them): read the flavor instead of assuming one.
    [row] = table(nova(kubeconfig, "list").stdout)
    args = tuple(a.format(flavor=row["FLAVOR"]) for a in args)
    message = message.format(flavor=row["FLAVOR"])
    result = nova(kubeconfig, *args)
    if message.startswith("No "):
        assert (result.returncode, result.stdout.strip()) == (0, message)
        return
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr, result.stderr


def test_connection_flags_are_passed_to_kubectl(
    kubeconfig: pathlib.Path, vm: str, tmp_path: pathlib.Path
) -> None:
    elsewhere = tmp_path / "no-such-kubeconfig"
    flags = (f"--kubeconfig={kubeconfig}", "--context", "kubenova", "-n", "default")
    env_less = nova(elsewhere, *flags, "list")  # $KUBECONFIG points nowhere; the flags win
    assert env_less.returncode == 0, env_less.stderr
    assert [r["NAME"] for r in table(env_less.stdout)] == [vm]
    wrong = nova(kubeconfig, "--context", "nope", "list")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: ")
    assert "context was not found for specified context: nope" in wrong.stderr
