"""hack/build-controlplane.sh takes ready binaries from KUBEBUILDER_ASSETS instead of building."""

from __future__ import annotations

import os
import pathlib
import subprocess

from tests import kube

SCRIPT = kube.REPO / "hack" / "build-controlplane.sh"


def _executable(path: pathlib.Path, body: str = "exit 0") -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: pathlib.Path, assets: pathlib.Path) -> subprocess.CompletedProcess[str]:
    # A `go` that fails loudly proves nothing was built.
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    _executable(fake_bin / "go", "echo 'go must not run' >&2; exit 99")
    env = {
        **os.environ,
        "KUBEBUILDER_ASSETS": str(assets),
        "KUBENOVA_CACHE": str(tmp_path / "cache"),
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, check=False
    )


def test_uses_kubebuilder_assets_when_complete(tmp_path: pathlib.Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        _executable(assets / name)
    result = _run(tmp_path, assets)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(assets)


def test_builds_when_kubebuilder_assets_lacks_a_binary(tmp_path: pathlib.Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    _executable(assets / "etcd")
    result = _run(tmp_path, assets)
    assert result.returncode == 99, result.stderr  # our fake `go` ran: it fell through to building
    assert "building etcd" in result.stderr
