"""--wait: poll the Instance (and its Migrations) until the request lands or fails.

What counts as done or failed is judged from the objects alone (`verify_state`,
`finish_state`, pure), so the same answer holds however late the poll starts. A request
is recognised by the Migration it creates (one not there before it was made); a request
the scheduler refused leaves a condition instead (ResizeFailed for a flavor change,
MigrateFailed for a migrate, whose annotation the controller then drops).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from kubenova.api import names
from kubenova.plugin import kubectl

POLL_SECONDS = 0.5  # a fake-driver resize takes about a second; a poll costs two GETs


@dataclasses.dataclass(frozen=True)
class Request:
    name: str
    before: set[str]  # migrations of the instance before the request
    generation: int = 0  # the instance's generation after a spec.flavor edit
    migrate: bool = False


@dataclasses.dataclass(frozen=True)
class State:
    done: bool
    failed: bool
    text: str


def _condition(inst: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in inst.get("status", {}).get("conditions", []) if c.get("type") == type_]
    return found[0] if found else {}


def _progress(inst: dict[str, Any], mig: dict[str, Any] | None) -> str:
    st = inst.get("status", {})
    text = " ".join(filter(None, (st.get("phase"), st.get("taskState"))))
    if mig is not None:
        text += f" (migration {mig['metadata']['name']}: {mig.get('status', {}).get('phase')})"
    return text


def verify_state(request: Request, inst: dict[str, Any], migs: list[dict[str, Any]]) -> State:
    st, name = inst.get("status", {}), request.name
    new = [m for m in migs if m["metadata"]["name"] not in request.before]
    mig = max(new, key=lambda m: m["metadata"].get("creationTimestamp", "")) if new else None
    if mig is not None:
        mine = st.get("migrationRef") == mig["metadata"]["name"]
        if mig.get("status", {}).get("phase") == "error" or (st.get("phase") == "ERROR" and mine):
            why = mig.get("status", {}).get("message") or _condition(inst, "ResizeFailed").get(
                "message", "no detail"
            )
            return State(False, True, f"migration {mig['metadata']['name']} failed: {why}")
        if st.get("phase") == "VERIFY_RESIZE" and not st.get("taskState") and mine:
            flavor = (st.get("flavor") or {}).get("name")
            return State(
                True,
                False,
                f"VERIFY_RESIZE: {flavor} on {st.get('node')}; keep it with "
                f"`kubectl nova confirm {name}`, undo it with `kubectl nova revert {name}`",
            )
        return State(False, False, _progress(inst, mig))
    if request.migrate:
        if names.ANNOTATION_MIGRATE not in inst["metadata"].get("annotations", {}):
            failed = _condition(inst, "MigrateFailed")
            if failed.get("status") == "True":
                return State(False, True, f"migrate refused: {failed.get('message')}")
    else:
        for type_, bad in (("ResizeFailed", "True"), ("FlavorValid", "False")):
            c = _condition(inst, type_)
            if c.get("status") == bad and c.get("observedGeneration", 0) >= request.generation:
                old = (st.get("flavor") or {}).get("name")
                return State(
                    False,
                    True,
                    f"resize not started: {c.get('reason')}: {c.get('message')}. kubenova "
                    f"retries; to cancel, set the flavor back: kubectl patch instance {name} "
                    f'--type=merge -p \'{{"spec":{{"flavor":"{old}"}}}}\'',
                )
    return State(False, False, _progress(inst, None) + ": waiting for the scheduler")


def finish_state(inst: dict[str, Any], mig: dict[str, Any] | None) -> State:
    st = inst.get("status", {})
    mphase = (mig or {}).get("status", {}).get("phase")
    if mphase == "error" or st.get("phase") == "ERROR":
        why = (mig or {}).get("status", {}).get("message") or "see kubectl describe instance"
        return State(False, True, f"failed: {why}")
    settled = st.get("phase") in ("ACTIVE", "SHUTOFF") and not st.get("taskState")
    if mphase in ("confirmed", "reverted") and settled and not st.get("migrationRef"):
        flavor = (st.get("flavor") or {}).get("name")
        return State(True, False, f"{st['phase']}: {flavor} on {st.get('node')} ({mphase})")
    return State(False, False, _progress(inst, mig))


def _poll(check: Any, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        state: State = check()
        if state.text != shown:
            print(state.text, flush=True)
            shown = state.text
        if state.done:
            return 0
        if state.failed:
            raise kubectl.Error(state.text)
        if time.monotonic() > deadline:
            raise kubectl.Error(f"timed out after {timeout:g}s; last seen: {state.text}")
        time.sleep(POLL_SECONDS)


def until_verify(k: kubectl.Kubectl, request: Request, *, timeout: float) -> int:
    return _poll(
        lambda: verify_state(request, k.instance(request.name), k.migrations_of(request.name)),
        timeout=timeout,
    )


def until_finished(k: kubectl.Kubectl, name: str, migration: str | None, *, timeout: float) -> int:
    def check() -> State:
        migs = [m for m in k.migrations_of(name) if m["metadata"]["name"] == migration]
        return finish_state(k.instance(name), migs[0] if migs else None)

    return _poll(check, timeout=timeout)
