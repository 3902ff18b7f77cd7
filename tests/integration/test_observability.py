"""/metrics, /healthz, /readyz and JSON logs of a real controller and agent, as an operator
(Prometheus, the kubelet, a log collector) would read them after a resize."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hack import controlplane

from kubenova.observability import metrics
from tests.env import Env

pytestmark = pytest.mark.controlplane

SMALL_NODE = "vcpus=8,memoryMiB=4096,diskGiB=200"  # m1.large (8 GiB) finds no valid host


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {(n, frozenset(labels.items())): v for n, labels, v in metrics.samples(text)}


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    labels: dict[str, str] | None = None,
    **more: str,
) -> float:
    return samples.get((name, frozenset({**(labels or {}), **more}.items())), 0.0)


VERIFIED: tuple[str, dict[str, str]] = (
    "kubenova_resize_duration_seconds_count",
    {"type": "resize", "outcome": "verify_resize"},
)


def json_lines(env: Env, process: str) -> list[dict[str, object]]:
    text = (env.dir / f"{process}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_metrics_probes_and_json_logs_around_a_resize(env: Env) -> None:
    ctl_port, agent_port = controlplane.free_port(), controlplane.free_port()
    env.start_controller(f"--metrics-port={ctl_port}", "--log-format=json")
    env.start_agent("node-a", SMALL_NODE, f"--metrics-port={agent_port}", "--log-format=json")
    for port in (ctl_port, agent_port):
        env.wait_for(lambda p=port: get(p, "/readyz")[0] == 200, what=f"readyz on {port}")
        assert get(port, "/healthz") == (200, "ok\n")

    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    assert env.resize("vm", "m1.small").ok
    env.wait_phase("vm", "VERIFY_RESIZE")
    # Recorded as the controller's status write lands: poll, as Prometheus would scrape.
    env.wait_for(lambda: value(scrape(ctl_port), *VERIFIED), what="resize timed")
    ctl = scrape(ctl_port)
    assert value(ctl, "kubenova_migrations_in_flight", type="resize") == 1
    assert value(ctl, *VERIFIED) == 1
    env.annotate("vm", "resize", "confirm")
    env.wait_phase("vm", "ACTIVE")
    assert env.resize("vm", "m1.medium").ok
    env.wait_phase("vm", "VERIFY_RESIZE")
    env.annotate("vm", "resize", "revert")
    env.wait_for(lambda: env.instance("vm")["spec"]["flavor"] == "m1.small", what="reverted")
    env.wait_phase("vm", "ACTIVE")

    # No valid host: a flavor bigger than the node.
    assert env.resize("vm", "m1.large").ok
    env.wait_for(
        lambda: value(scrape(ctl_port), "kubenova_scheduling_failures_total", reason="NoValidHost"),
        what="a NoValidHost counted",
    )

    ctl = scrape(ctl_port)
    assert value(ctl, "kubenova_migrations_in_flight", type="resize") == 0
    assert value(ctl, *VERIFIED) == 2
    for outcome in ("confirmed", "reverted"):
        count = value(
            ctl, "kubenova_resize_finish_duration_seconds_count", type="resize", outcome=outcome
        )
        assert count == 1, outcome
    assert (
        value(ctl, "kubenova_scheduling_duration_seconds_count") >= 4
    )  # build, 2 resizes, NoValidHost
    assert value(ctl, "kubenova_hypervisor_memory_bytes", hypervisor="node-a") == 4096 << 20
    assert value(ctl, "kubenova_hypervisor_memory_used_bytes", hypervisor="node-a") == 2048 << 20
    assert value(ctl, "kubenova_hypervisor_vcpus", hypervisor="node-a") == 8
    assert value(ctl, "kubenova_hypervisor_up", hypervisor="node-a") == 1

    agent = scrape(agent_port)
    for step in (
        "spawn",
        "migrate_disk_and_power_off",
        "finish_migration",
        "confirm_migration",
        "finish_revert_migration",
    ):
        count = value(agent, "kubenova_agent_step_duration_seconds_count", step=step, driver="fake")
        assert count > 0, step

    # Every line is JSON; each event is logged under its instance; the agent names its node.
    def reasons() -> list[str]:
        return [
            str(line["reason"])
            for line in json_lines(env, "controller")
            if line.get("logger") == "kubenova.events" and line.get("instance") == "default/vm"
        ]

    env.wait_for(lambda: "NoValidHost" in reasons(), what="NoValidHost logged")
    assert reasons()[:2] == ["Scheduled", "Spawned"]
    assert {"ResizeScheduled", "VerifyResize", "ResizeConfirmed", "ResizeReverted"} <= set(
        reasons()
    )
    agent_lines = json_lines(env, "agent-node-a")
    assert agent_lines
    assert all(line.get("node") == "node-a" for line in agent_lines)
    assert {"time", "level", "logger", "message"} <= set(agent_lines[0])
