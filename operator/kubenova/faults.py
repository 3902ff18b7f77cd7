"""Fault injection for crash-recovery tests: SIGKILL this process at a named step boundary.

Armed by one setting (`KUBENOVA_FAULT=<component>:<point>`); a no-op otherwise. The
tests kill at every boundary of a resize, a confirm and a revert, restart the process
and check that it converges. `<component>:fail-once:<point>` instead makes the step at
that point fail the first time it runs in this process (a failed block job, a rebase
that runs out of space): the failure paths run for real, and the retry succeeds.
`<component>:delay:<point>:<seconds>` makes the step at that point slow (a webhook that
answers after the API server gave up).
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_armed: str = ""
_failed: set[str] = set()


def arm(spec: str) -> None:
    global _armed  # noqa: PLW0603 - one process-wide switch, set once at start-up
    _armed = spec


def point(component: str, name: str) -> None:
    """Called at each step boundary; kills the process if this is the armed one."""
    if _armed and _armed == f"{component}:{name}":
        log.warning("fault injection: SIGKILL at %s:%s", component, name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def fail_once(component: str, name: str) -> bool:
    """True the first time an armed `fail-once` point is reached, False otherwise."""
    spec = f"{component}:fail-once:{name}"
    if _armed != spec or spec in _failed:
        return False
    _failed.add(spec)
    log.warning("fault injection: failing %s:%s once", component, name)
    return True


def delay(component: str, name: str) -> float:
    """Seconds the armed `delay` point `name` must wait (0 when not armed)."""
    prefix = f"{component}:delay:{name}:"
    if not _armed.startswith(prefix):
        return 0.0
    return float(_armed.removeprefix(prefix))
