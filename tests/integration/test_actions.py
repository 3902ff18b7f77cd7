"""Bad input and bad timing: each refused where the user is, and nothing lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import builders
from tests.env import Env

pytestmark = pytest.mark.controlplane


def warnings(env: Env, name: str) -> list[str]:
    return [m for t, _, m in env.events(name) if t == "Warning"]


def warned(env: Env, matches: Callable[[str], bool], name: str = "vm") -> None:
    """A Warning event on `name` matches (events are posted just after their write)."""
    env.wait_for(lambda: any(matches(w) for w in warnings(env, name)), what="the warning")


def annotations(env: Env, name: str) -> dict[str, str]:
    return env.instance(name)["metadata"].get("annotations", {})  # type: ignore[no-any-return]


@pytest.fixture
def active(env: Env) -> Env:
    env.start_controller()
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    return env


@pytest.mark.parametrize("action", ["confirm", "revert"])
def test_confirm_or_revert_outside_verify_resize(active: Env, action: str) -> None:
    active.annotate("vm", "resize", action)
    active.wait_for(
        lambda: "compute.kubenova.io/resize" not in annotations(active, "vm"),
        what="annotation removed",
    )
    warned(active, lambda w: f"resize={action} ignored" in w and "VERIFY_RESIZE" in w)
    assert active.phase("vm") == "ACTIVE"
    assert active.migrations() == []


def test_unknown_action_value_in_verify_resize(active: Env) -> None:
    assert active.resize("vm", "m1.small").ok
    active.wait_phase("vm", "VERIFY_RESIZE")
    active.annotate("vm", "resize", "yes-please")
    active.wait_for(
        lambda: "compute.kubenova.io/resize" not in annotations(active, "vm"),
        what="annotation removed",
    )
    warned(active, lambda w: "resize=yes-please ignored: use confirm or revert" in w)
    assert active.phase("vm") == "VERIFY_RESIZE"
    assert active.migrations()[0]["status"]["phase"] == "finished"


def test_flavor_edit_in_verify_resize_is_refused_by_the_api_server(active: Env) -> None:
    assert active.resize("vm", "m1.small").ok
    active.wait_phase("vm", "VERIFY_RESIZE")
    result = active.resize("vm", "m1.medium")
    assert not result.ok
    assert "spec.flavor cannot change while status.phase is VERIFY_RESIZE" in result.stderr
    assert "confirm or revert the pending resize first" in result.stderr
    assert active.instance("vm")["spec"]["flavor"] == "m1.small"


def test_flavor_edit_during_resize_is_refused_by_the_api_server(env: Env) -> None:
    env.start_controller()
    env.start_agent("node-a", "vcpus=8,memoryMiB=16384,diskGiB=200", "--latency=2")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    assert env.resize("vm", "m1.small").ok
    env.wait_for(lambda: env.phase("vm") == "RESIZE", what="RESIZE")
    result = env.resize("vm", "m1.medium")
    assert not result.ok
    assert "while status.phase is RESIZE" in result.stderr
    env.wait_phase("vm", "VERIFY_RESIZE")


@pytest.mark.parametrize(
    ("flavor", "message"),
    [
        ("m9.unknown", "flavor m9.unknown does not exist"),
        ("retired", "flavor retired is disabled"),
        (
            "small-disk",
            "has a 1 GiB disk, smaller than the current 20 GiB (m1.small): disks never shrink",
        ),
    ],
    ids=["unknown", "disabled", "disk-down-size"],
)
def test_webhook_refuses_flavors(env: Env, flavor: str, message: str) -> None:
    env.start_controller()
    env.start_agent("node-a")
    env.kubectl.apply(
        {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "retired"},
            "spec": {"vcpus": 1, "memoryMiB": 4096, "diskGiB": 40, "disabled": True},
        }
    )
    env.kubectl.apply(
        {
            "apiVersion": "compute.kubenova.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "small-disk"},
            "spec": {"vcpus": 2, "memoryMiB": 4096, "diskGiB": 1},
        }
    )
    env.create("vm", "m1.small")
    env.wait_phase("vm", "ACTIVE")
    result = env.resize("vm", flavor)
    assert not result.ok
    assert "denied the request" in result.stderr
    assert message in result.stderr
    assert env.instance("vm")["spec"]["flavor"] == "m1.small"
    # Creating with it is refused too (the disk rule applies only to a change).
    if flavor != "small-disk":
        created = env.kubectl.apply(
            {
                "apiVersion": "compute.kubenova.io/v1alpha1",
                "kind": "Instance",
                "metadata": {"name": "vm2", "namespace": "default"},
                "spec": {"flavor": flavor, "image": "cirros"},
            }
        )
        assert not created.ok
        assert message in created.stderr


def test_a_flavor_and_an_instance_applied_together_are_admitted(env: Env) -> None:
    """`kubectl apply -f flavor.yaml -f instance.yaml`: the Flavor may not have reached the
    webhook's store when the Instance is checked (here its watch lags 30 s); the webhook
    then looks it up."""
    env.start_controller(fault="controller:delay:flavors-watch:30")
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")  # the webhook answers
    for n in range(3):
        both = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                builders.flavor(f"fresh-{n}", vcpus=1, memoryMiB=512, diskGiB=1),
                builders.instance(f"fresh-{n}", flavor=f"fresh-{n}"),
            ],
        }
        result = env.kubectl.apply(both)
        assert result.ok, result.stderr


def test_a_resize_takes_the_flavor_as_it_is_now_not_as_a_lagging_watch_has_it(
    env: Env,
) -> None:
    """A Flavor replaced (deleted, created again bigger) just before a resize to it: the
    resize carries the new sizes, although the controller's Flavor watch is 10 s behind.
    What a placement persists is read from the API server (the chaos suite found a resize
    placed with a Flavor replaced during a watch gap)."""
    env.kubectl.apply(builders.flavor("grow", vcpus=1, memoryMiB=1024, diskGiB=20))
    env.start_controller(fault="controller:delay:flavors-watch:10")
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")  # the lagging watch has delivered both flavors by now
    env.kubectl("delete", "flavor", "grow")
    env.kubectl.apply(builders.flavor("grow", vcpus=1, memoryMiB=2048, diskGiB=20))
    assert env.resize("vm", "grow").ok
    inst = env.wait_phase("vm", "VERIFY_RESIZE")
    assert inst["status"]["flavor"]["memoryMiB"] == 2048
    [mig] = env.migrations()
    assert mig["spec"]["newFlavor"]["memoryMiB"] == 2048


def test_controller_rechecks_when_the_webhook_is_bypassed(env: Env) -> None:
    env.start_controller(webhook=False)
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    assert env.resize("vm", "m9.unknown").ok  # no webhook: the API server accepts it

    def reported() -> bool:
        conds = env.instance("vm")["status"].get("conditions", [])
        return any(
            c["type"] == "FlavorValid"
            and c["status"] == "False"
            and c["reason"] == "FlavorNotFound"
            for c in conds
        )

    env.wait_for(reported, what="FlavorValid=False FlavorNotFound")
    warned(env, lambda w: "flavor m9.unknown does not exist" in w)
    assert env.phase("vm") == "ACTIVE"
    assert env.migrations() == []


def test_delete_in_the_middle_of_a_resize_cleans_everything(env: Env) -> None:
    env.start_controller()
    env.start_agent("node-a", "vcpus=2,memoryMiB=1024,diskGiB=10", "--latency=1")
    env.create("vm")
    uuid = env.wait_phase("vm", "ACTIVE", timeout=90)["status"]["uuid"]
    env.start_agent("node-b", "vcpus=8,memoryMiB=16384,diskGiB=200", "--latency=1")
    assert env.resize("vm", "m1.small").ok
    in_flight = {"pre-migrating", "migrating", "post-migrating"}
    env.wait_for(
        lambda: any(m["status"].get("phase") in in_flight for m in env.migrations()),
        what="migration in flight",
    )

    env.kubectl("delete", "instance", "vm", "--wait=true", "--timeout=60s")
    assert not env.kubectl.run("get", "instance", "vm").ok
    env.wait_for(lambda: env.migrations() == [], what="migration garbage-collected")
    for node in ("node-a", "node-b"):
        env.wait_for(lambda n=node: env.usage(n).get("instances") == 0, what=f"{node} released")
        assert uuid not in env.guests(node)
