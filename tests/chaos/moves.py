"""The chaos runner's moves (hack/chaos.py): the user's actions on a whole kubenova and
the faults that strike it, each done the way tests/chaos's scenarios do them one by one.

A fault returns once it is over (a process restarted, a lease taken over); what it finds
wrong on the way (an old leader that does not exit, a webhook that admits what it must
refuse) goes to `Cluster.found`, beside what the invariant checker finds afterwards.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable
from typing import Any

from hack import controlplane_faults as faults

from tests import builders
from tests import env as kubenova_env
from tests.chaos import invariants, scenario, views

CONTROLLERS = ("ctl-a", "ctl-b")
LEASE = "--lease-duration-seconds=3"  # a standby takes over within ~4 s of a leader's death
CAPACITY = "vcpus=8,memoryMiB=12288,diskGiB=200"  # room for a few of FLAVORS, not for all
AGENT_FLAGS = (
    "--latency=0.2",  # each driver step takes a while: faults land mid-step
    # A guest whose Instance went while its node was down is swept within seconds.
    "--orphan-sweep-seconds=2",
    "--orphan-grace-seconds=3",
)
# Sample flavors (crds/samples/flavors.yaml) by disk size; m1.xlarge fits no node here.
FLAVORS = {"m1.tiny": 1, "m1.small": 20, "m1.medium": 40, "m1.large": 80}
WEBHOOK = "validate-instance.compute.kubenova.io"
WEBHOOK_CONFIG = "validating.compute.kubenova.io"
TAKEOVER_SECONDS = 30.0  # bound on a standby taking a lease over
EXIT_SECONDS = 15.0  # bound on a leader that lost its lease exiting once it runs again
Seen = list[dict[str, Any]]  # the Instances as `act` just listed them, for the action it picks


class Cluster:
    """The kubenova under test and the user's and the faults' moves on it."""

    def __init__(self, env: kubenova_env.Env, rng: random.Random, instances: int) -> None:
        self.env = env
        self.rng = rng
        self.target = instances
        self.names: list[str] = []  # every name created so far, in order
        self.poisoned: set[str] = set()  # names of Instances given up: not created again
        self.restarts = 0
        self.refused = 0
        self.found: list[str] = []  # product checks the faults make on the way
        self.since: dict[str, int] = {}  # process name -> where its current run's log starts
        # Instances (uids) that never settled: reported once, deleted, not waited for again.
        self.given_up: set[str] = set()

    def start(self, nodes: int, timeout: float) -> None:
        """Two controllers, `nodes` fake agents, the Instances, settled."""
        for name in CONTROLLERS:
            self.start_controller(name)
        self.wait(lambda: self.leader() is not None, TAKEOVER_SECONDS)
        for n in range(1, nodes + 1):
            self.env.start_agent(f"node-{n}", CAPACITY, *AGENT_FLAGS)
        for _ in range(self.target):
            self._create(self.instances())
        converged = invariants.wait_converged(self.env, timeout)
        if converged.violations:
            raise RuntimeError(f"the cluster never settled before the first fault: {converged}")

    def give_up(self, uids: list[str]) -> None:
        """What a user does with a VM stuck for good: delete it, so that the run goes on
        (the stuck state is a violation already)."""
        for inst in self.instances():
            if inst["metadata"]["uid"] in uids:
                name = inst["metadata"]["name"]
                self.env.kubectl.run("delete", "instance", name, "--wait=false")
                self.poisoned.add(name)  # what kept it stuck may be left under its name
        self.given_up |= set(uids)

    # --- processes -----------------------------------------------------------------------

    def start_controller(self, name: str, fault: str = "") -> kubenova_env.Process:
        self._mark(name)
        return self.env.start_controller(f"--identity={name}", LEASE, name=name, fault=fault)

    def revive(self) -> None:
        """Restart whatever exited: controllers (as their Deployment would) and agents."""
        for name, proc in [*self.env.controllers.items(), *self.env.agents.items()]:
            if proc.proc is not None and proc.proc.poll() is not None:
                self.restarts += 1
                self._mark(name)
                proc.start()

    def _mark(self, name: str) -> None:
        """Where the log of the process about to start begins (logs are appended to)."""
        log = self.env.dir / f"{name}.log"
        self.since[name] = log.stat().st_size if log.exists() else 0

    def leading(self, name: str) -> bool:
        """Whether the process running as `name` holds the lease itself (the Lease names
        each process: `<identity>_<8 hex>`, a predecessor that exited is another)."""
        held = scenario.lease_holder(self.env)
        proc = self.env.controllers[name]
        said = proc.log.read_bytes()[self.since.get(name, 0) :]
        return held is not None and f"leader election: {held} holds".encode() in said

    def leader(self) -> str | None:
        """The --identity of the controller that holds the Lease, if it is one of ours."""
        held = scenario.holder(self.env)
        return held if held in CONTROLLERS else None

    def webhook_owner(self) -> str | None:
        """The controller whose server the webhook configuration points at."""
        url = self.env.kubectl.run(
            "get", "validatingwebhookconfiguration", WEBHOOK_CONFIG,
            "-o", "jsonpath={.webhooks[0].clientConfig.url}",
        ).stdout  # fmt: skip
        for name, proc in self.env.controllers.items():
            port = next(a for a in proc.argv if a.startswith("--webhook-port=")).split("=")[1]
            if f":{port}/" in url:
                return name
        return None

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.3)
        return False

    # --- what the user sees --------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        result = self.env.kubectl.run("get", "instances", "-o", "json")
        return json.loads(result.stdout)["items"] if result.ok else []

    def pick(
        self, phase: str, *, idle: bool = False, among: list[dict[str, Any]] | None = None
    ) -> dict[str, Any] | None:
        """A random Instance in `phase` (of `among`, else of all), not being deleted;
        `idle`: no action pending on it either, so that nothing moves it on until the user
        does."""
        found = [
            i
            for i in (self.instances() if among is None else among)
            if i.get("status", {}).get("phase") == phase
            and not i["metadata"].get("deletionTimestamp")
            and not (idle and set(i["metadata"].get("annotations", {})) & set(views.ACTIONS))
        ]
        return self.rng.choice(found) if found else None

    # --- the user's actions --------------------------------------------------------------

    def act(self, allowed: tuple[str, ...] = ("resize", "confirm", "revert", "migrate",
                                              "delete", "create")) -> str:  # fmt: skip
        """One random user action among those that make sense now; returns its name."""
        seen = self.instances()
        live = [i for i in seen if not i["metadata"].get("deletionTimestamp")]
        phases = {i.get("status", {}).get("phase") for i in live}
        options = []
        if "ACTIVE" in phases:
            options += ["resize", "resize", "migrate"]
        if "VERIFY_RESIZE" in phases:
            options += ["confirm", "revert"]
        if len(live) > self.target // 2:
            options.append("delete")
        if len(live) < self.target:
            options += ["create"] * (1 + self.target - len(live))
        options = [o for o in options if o in allowed] or ["none"]
        choice = self.rng.choice(options)
        getattr(self, f"_{choice}")(seen)
        return choice

    def _none(self, seen: Seen) -> None:
        pass

    def _resize(self, seen: Seen) -> None:
        inst = self.pick("ACTIVE", among=seen)
        if inst is None:
            return
        current = inst["status"]["flavor"]
        larger = [f for f, disk in FLAVORS.items() if disk >= current["diskGiB"]]
        choices = [f for f in larger if f != current["name"]] or list(FLAVORS)
        self._refused(self.env.resize(inst["metadata"]["name"], self.rng.choice(choices)).ok)

    def _annotate(self, seen: Seen, phase: str, key: str, value: str) -> None:
        inst = self.pick(phase, among=seen)
        if inst is not None:
            result = self.env.kubectl.run(
                "annotate", "--overwrite", "instance", inst["metadata"]["name"],
                f"compute.kubenova.io/{key}={value}",
            )  # fmt: skip
            self._refused(result.ok)

    def _confirm(self, seen: Seen) -> None:
        self._annotate(seen, "VERIFY_RESIZE", "resize", "confirm")

    def _revert(self, seen: Seen) -> None:
        self._annotate(seen, "VERIFY_RESIZE", "resize", "revert")

    def _migrate(self, seen: Seen) -> None:
        self._annotate(seen, "ACTIVE", "migrate", "")

    def _delete(self, seen: Seen) -> None:
        live = [i for i in seen if not i["metadata"].get("deletionTimestamp")]
        if live:
            name = self.rng.choice(live)["metadata"]["name"]
            self._refused(self.env.kubectl.run("delete", "instance", name, "--wait=false").ok)

    def _create(self, seen: Seen) -> None:
        """A new Instance: half the time under the name of one deleted before (once it is
        gone), which its successor must not confuse with it; else under a new name."""
        taken = {i["metadata"]["name"] for i in seen}
        again = [n for n in self.names if n not in taken and n not in self.poisoned]
        if again and self.rng.random() < 0.5:
            name = self.rng.choice(again)
        else:
            name = f"vm-{len(self.names)}"
            self.names.append(name)
        flavor = self.rng.choice(["m1.tiny", "m1.small", "m1.medium"])
        self._refused(self.env.kubectl.apply(builders.instance(name, flavor=flavor)).ok)

    def _refused(self, ok: bool) -> None:
        """A user request the API server refused: a webhook down, a phase that moved on."""
        self.refused += not ok

    # --- faults ----------------------------------------------------------------------------

    def strike(self, fault: str) -> None:
        getattr(self, "_" + fault.replace("-", "_"))()

    def _apiserver_restart(self) -> None:
        # Graceful (2-3 s of shutdown) or a crash, half and half.
        faults.restart_apiserver(self.env.plane, crash=self.rng.random() < 0.5)

    def _etcd_restart(self) -> None:
        faults.restart_etcd(self.env.plane, crash=True)  # a graceful stop waits 7 s

    def _watch_expiry(self) -> None:
        """Both controllers paused; their watches cut; the user acts meanwhile; etcd
        compacted and the API server restarted; then they run again, to a 410 and a relist."""
        paused = [self.env.controllers[n] for n in CONTROLLERS]
        for proc in paused:
            proc.pause()
        try:
            # What the gap changes must reach no socket (a paused process's still buffer).
            faults.restart_apiserver(self.env.plane, crash=True)
            # No flavor change or create: they need the (paused) webhook.
            self.act(allowed=("confirm", "revert", "migrate", "delete"))
            # faults.expire_resource_versions, with a crash for the restart: as good, faster.
            faults.compact_etcd(self.env.plane)
            faults.restart_apiserver(self.env.plane, crash=True)
        finally:
            for proc in paused:
                proc.resume()

    def _leader_pause(self) -> None:
        """SIGSTOP the leader past its lease; a standby takes over; SIGCONT: the old leader
        must exit (it lost its lease) rather than carry on."""
        name = self._leader()
        proc = self.env.controllers[name]
        proc.pause()
        took = self.wait(lambda: self.leader() not in (None, name), TAKEOVER_SECONDS)
        proc.resume()
        if not took:
            self.found.append(f"leader-pause: no standby took over from {name}")
            return
        try:
            code: int | None = proc.wait_exit(EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        if code != 1:
            self.found.append(f"leader-pause: {name} resumed after losing its lease, exit {code}")

    def _leader_kill(self) -> None:
        self.env.controllers[self._leader()].kill()

    def _agent_kill(self) -> None:
        self.env.agents[self.rng.choice(sorted(self.env.agents))].kill()

    def _create_response_lost(self) -> None:
        """The standby restarted with the fault, the leader stopped (it hands the lease
        over), started again: the faulted one leads, and the next Migration create loses
        its answer."""
        leader = self._leader()
        other = next(n for n in CONTROLLERS if n != leader)
        self.env.controllers[other].stop()
        since = len(self.env.controllers[other].log.read_bytes())
        faulted = self.start_controller(other, fault="controller:fail-once:create-response-lost")
        self.wait(lambda: b"standing by" in faulted.log.read_bytes()[since:], TAKEOVER_SECONDS)
        self.env.controllers[leader].stop()
        if not self.wait(lambda: self.leader() == other, TAKEOVER_SECONDS):
            self.found.append(f"create-response-lost: {other} did not take the released lease")
        self.start_controller(leader)
        self._resize(self.instances())

    def _webhook_gone(self) -> None:
        """SIGKILL the controller serving the webhook: a flavor change must be refused by
        the webhook (failurePolicy Fail), going back to status.previousFlavor admitted."""
        owner = self.webhook_owner()
        if owner is None:
            self.found.append("webhook-gone: no controller serves the webhook configuration")
            return
        self.env.controllers[owner].kill()
        inst = self.pick("ACTIVE", idle=True)
        if inst is not None:
            other = [f for f in FLAVORS if f != inst["spec"]["flavor"]]
            refused = self.env.resize(inst["metadata"]["name"], self.rng.choice(other))
            # A resize of the action just before may have left ACTIVE: the CEL rule refuses.
            moved = "cannot change while status.phase" in refused.stderr
            # The other replica, restarting, may have pointed the configuration at itself
            # meanwhile (each registers it at start): then a webhook answered, rightly.
            served = self.webhook_owner() not in (None, owner)
            if not served and (refused.ok or not (moved or WEBHOOK in refused.stderr)):
                self.found.append(f"webhook-gone: a flavor change got {refused}")
        verify = self.pick("VERIFY_RESIZE", idle=True)  # stays there: its previousFlavor too
        if verify is not None:
            back = verify["status"]["previousFlavor"]["name"]
            admitted = self.env.resize(verify["metadata"]["name"], back)
            if not admitted.ok:
                self.found.append(f"webhook-gone: going back to {back} refused: {admitted}")

    def _leader(self) -> str:
        """The controller that leads, once one does (a takeover may be under way)."""
        self.wait(lambda: any(self.leading(n) for n in CONTROLLERS), TAKEOVER_SECONDS)
        return next((n for n in CONTROLLERS if self.leading(n)), CONTROLLERS[0])


FAULTS = (
    "apiserver-restart",
    "etcd-restart",
    "watch-expiry",
    "leader-pause",
    "leader-kill",
    "agent-kill",
    "create-response-lost",
    "webhook-gone",
)
