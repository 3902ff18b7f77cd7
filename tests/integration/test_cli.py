"""The `kubenova` command's flags win over the environment, as their help says."""

from __future__ import annotations

import pathlib
import signal

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


def test_agent_stops_cleanly_on_sigterm(env: Env) -> None:
    """SIGTERM (the kubelet stopping the pod) ends the agent through its cleanup, exit 0.
    In a pod the agent is PID 1, which gets no signal it has no handler for: unhandled, the
    kubelet's SIGTERM was ignored and every rollout waited out the grace period."""
    env.start_controller()
    agent = env.start_agent("node-a")
    env.create("vm", "m1.tiny")
    env.wait_phase("vm", "ACTIVE")
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait_exit(timeout=30) == 0, agent.tail()
    assert "stopped" in agent.tail(5)
