"""The `kubenova` command's flags win over the environment, as their help says."""

from __future__ import annotations

import pathlib

import pytest

from tests.env import Env

pytestmark = pytest.mark.controlplane


def test_controller_kubeconfig_flag_wins_over_the_environment(
    env: Env, tmp_path: pathlib.Path
) -> None:
    env.start_controller(
        f"--kubeconfig={env.plane.kubeconfig}",
        environ={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")},
    )
    env.start_agent("node-a")
    env.create("vm", "m1.tiny")
    assert env.wait_phase("vm", "ACTIVE")["status"]["node"] == "node-a"
