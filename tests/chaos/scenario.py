"""Steps the chaos scenarios share: timings, the lease holder, waiting for a migration
phase, keeping a control-plane process down for a while."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hack import controlplane_faults as faults

from tests.env import Env

LEASE = ["--lease-duration-seconds=3"]  # a standby takes over within ~4 s
# Each fake driver step takes this long, so a fault can land while a step is under way.
SLOW = "--latency=1"
CAPACITY = "vcpus=8,memoryMiB=16384,diskGiB=200"  # tests/env.py's default
OUTAGE_SECONDS = 5.0  # how long a stopped control-plane process stays down
IN_FLIGHT = ("", "pre-migrating", "migrating", "post-migrating")


def lease_holder(env: Env) -> str | None:
    """Who holds the controllers' Lease: one controller process, `<identity>_<8 hex>`
    (controller/main.py), so a replica restarted under its name is another holder."""
    result = env.kubectl.run("get", "lease", "kubenova-controller", "-o", "json")
    return json.loads(result.stdout)["spec"].get("holderIdentity") if result.ok else None


def holder(env: Env) -> str | None:
    """The --identity of the controller that holds the Lease (its process suffix dropped)."""
    held = lease_holder(env)
    return re.sub(r"_[0-9a-f]{8}$", "", held) if held else None


def migration_of(env: Env, instance: str) -> dict[str, Any] | None:
    """The instance's newest Migration (the highest sequence in its name), if any."""
    mine = [m for m in env.migrations() if m["spec"]["instanceName"] == instance]
    return max(mine, key=lambda m: int(m["metadata"]["name"].rsplit("-", 1)[1]), default=None)


def wait_migration(
    env: Env, instance: str, phases: tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    """Poll until the instance's newest Migration is in one of `phases`."""

    def reached() -> dict[str, Any] | None:
        mig = migration_of(env, instance)
        return mig if mig and mig.get("status", {}).get("phase", "") in phases else None

    found: dict[str, Any] = env.wait_for(reached, timeout=timeout, what=f"{instance} in {phases}")
    return found


@contextlib.contextmanager
def down(stop: Callable[[], None], start: Callable[[], None]) -> Iterator[None]:
    """Stop a process, keep it down OUTAGE_SECONDS (plus what the block does), start it."""
    stop()
    began = time.monotonic()
    try:
        yield
        # The fault's duration, not a wait for a condition: nothing to poll for.
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
    finally:
        start()


def apiserver_down(env: Env) -> contextlib.AbstractContextManager[None]:
    return down(lambda: faults.stop_apiserver(env.plane), lambda: faults.start_apiserver(env.plane))


def etcd_crashed(env: Env) -> contextlib.AbstractContextManager[None]:
    return down(
        lambda: faults.stop_etcd(env.plane, crash=True), lambda: faults.start_etcd(env.plane)
    )


@contextlib.contextmanager
def deployment(env: Env) -> Iterator[list[str]]:
    """Restart a controller replica that exits, as its Deployment would (a leader that
    cannot renew its lease in time exits on purpose); yields the names restarted. The
    restarted processes die with this block (setpriv --pdeathsig follows the thread that
    started them), so keep every check inside it."""
    restarted: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name, proc in list(env.controllers.items()):
                if proc.proc is not None and proc.proc.poll() is not None:
                    restarted.append(name)
                    proc.start()
            stop.wait(0.5)

    thread = threading.Thread(target=watch, name="deployment", daemon=True)
    thread.start()
    try:
        yield restarted
    finally:
        stop.set()
        thread.join()


def always(predicate: Callable[[], bool], *, seconds: float, what: str) -> None:
    """Poll `predicate` for `seconds`; fail the first time it is false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.3)


def timestamp(text: str) -> datetime.datetime:
    """An API server time (RFC 3339, `Z`, up to microseconds)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
