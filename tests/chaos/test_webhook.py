"""The validating webhook gone or slow. Its failurePolicy is Fail: with no controller to
answer, a flavor change is refused with an error naming the webhook, while setting
spec.flavor back to status.previousFlavor (a revert) is exempted by a matchCondition and
admitted. A webhook slower than its timeoutSeconds (10) refuses by timeout and changes
nothing; with the fault gone the same change is admitted."""

from __future__ import annotations

import time

import pytest

from tests.chaos import invariants
from tests.env import Env, Process

pytestmark = pytest.mark.controlplane

WEBHOOK = "validate-instance.compute.kubenova.io"
TIMEOUT_SECONDS = 10  # the webhook configuration's timeoutSeconds (controller/app.py)


def registered(env: Env, controller: Process, since: int) -> None:
    """Wait until `controller` has pointed the webhook configuration at itself."""

    def said() -> bool:
        return b"webhook configuration" in controller.log.read_bytes()[since:]

    env.wait_for(said, what="the webhook configuration registered")


def restart(env: Env, *, fault: str = "") -> Process:
    assert env.controller is not None
    env.controller.stop()  # SIGTERM: it hands its lease over and unregisters its webhook
    since = len(env.controller.log.read_bytes())
    controller = env.start_controller(fault=fault)
    registered(env, controller, since)
    return controller


def test_with_the_webhook_gone_a_change_is_refused_and_going_back_admitted(env: Env) -> None:
    controller = env.start_controller()
    registered(env, controller, 0)
    env.start_agent("node-a")
    for name in ("vm", "other"):
        env.create(name)
        env.wait_phase(name, "ACTIVE")
    assert env.resize("vm", "m1.small").ok
    env.wait_phase("vm", "VERIFY_RESIZE")

    with invariants.sampling(env) as seen:
        controller.kill()  # no clean-up: its webhook configuration stays registered
        refused = env.resize("other", "m1.small")
        assert not refused.ok
        assert WEBHOOK in refused.stderr, refused.stderr
        assert env.instance("other")["spec"]["flavor"] == "m1.tiny"
        back = env.resize("vm", "m1.tiny")  # status.previousFlavor: a declarative revert
        assert back.ok, back.stderr

        env.start_controller()
        inst = env.wait_phase("vm", "ACTIVE")
        assert (inst["spec"]["flavor"], inst["status"]["flavor"]["name"]) == ("m1.tiny",) * 2
        assert [m["status"]["phase"] for m in env.migrations()] == ["reverted"]
        env.wait_for(lambda: env.resize("other", "m1.small").ok, what="the webhook back")
        env.wait_phase("other", "VERIFY_RESIZE")
        env.annotate("other", "resize", "confirm")
        assert env.wait_phase("other", "ACTIVE")["status"]["flavor"]["name"] == "m1.small"
        converged = invariants.wait_converged(env, timeout=30)
        assert invariants.check(env, settled=True) == []
    assert not converged.violations
    assert seen.report() == []


def test_a_webhook_slower_than_its_timeout_refuses_and_changes_nothing(env: Env) -> None:
    controller = env.start_controller()
    registered(env, controller, 0)
    env.start_agent("node-a")
    env.create("vm")
    env.wait_phase("vm", "ACTIVE")
    restart(env, fault=f"controller:delay:webhook:{TIMEOUT_SECONDS + 2}")

    began = time.monotonic()
    refused = env.resize("vm", "m1.small")
    assert not refused.ok
    assert time.monotonic() - began >= TIMEOUT_SECONDS - 1  # the API server gave up waiting
    assert WEBHOOK in refused.stderr, refused.stderr
    assert "deadline exceeded" in refused.stderr or "timeout" in refused.stderr, refused.stderr
    inst = env.instance("vm")
    assert (inst["spec"]["flavor"], inst["status"]["phase"]) == ("m1.tiny", "ACTIVE")
    assert env.migrations() == []

    restart(env)  # the fault gone: the same change is admitted and carried out
    assert env.resize("vm", "m1.small").ok
    env.wait_phase("vm", "VERIFY_RESIZE")
    env.annotate("vm", "resize", "confirm")
    assert env.wait_phase("vm", "ACTIVE")["status"]["flavor"]["name"] == "m1.small"
    assert not invariants.wait_converged(env, timeout=30).violations
    assert invariants.check(env, settled=True) == []
