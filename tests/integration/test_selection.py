"""Server-side selection: each agent's watches deliver its own node's objects only.

With 3 agents and 30 instances, every watch event an agent received (its debug log
lists them) is for an instance placed on its node, and each instance reached exactly
one agent: the API server filtered, not the agent.
"""

from __future__ import annotations

import re

import pytest

from tests.env import Env

pytestmark = pytest.mark.controlplane

EVENT = re.compile(r"watch event (\w+) Instance (\S+) \(")
NODES = ("node-a", "node-b", "node-c")


def test_each_agent_receives_only_its_own_instances(env: Env) -> None:
    env.start_controller()
    for node in NODES:
        env.start_agent(node, "vcpus=64,memoryMiB=65536,diskGiB=1000", debug=True)
    for i in range(30):
        env.create(f"vm-{i:02d}")

    def all_active() -> bool:
        items = env.kubectl.get_json("instances")["items"]
        return len(items) == 30 and all(i.get("status", {}).get("phase") == "ACTIVE" for i in items)

    env.wait_for(all_active, timeout=120, what="30 instances ACTIVE")
    placed = {n: set() for n in NODES}  # type: dict[str, set[str]]
    for inst in env.kubectl.get_json("instances")["items"]:
        placed[inst["status"]["node"]].add(f"default/{inst['metadata']['name']}")
    assert all(placed.values()), placed  # spread put instances on every node

    received: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for node in NODES:
        events = EVENT.findall(env.agents[node].log.read_text())
        received[node] = {key for _, key in events}
        counts[node] = len(events)
        assert received[node] == placed[node], f"{node} saw {received[node] - placed[node]}"
    print(
        f"instance watch events per agent: {counts}; instances per node: "
        f"{ {n: len(k) for n, k in placed.items()} }"
    )
    assert sum(len(keys) for keys in received.values()) == 30
    # Every instance changes several times (scheduled, labelled, spawned, reported); an
    # agent that received every event would count all of them, not its share.
    assert all(counts[n] < sum(counts.values()) / 2 for n in NODES), counts
