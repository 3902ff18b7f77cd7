"""Fault injection for crash-recovery tests: SIGKILL this process at a named step boundary.

Armed by one setting (`KUBENOVA_FAULT=<component>:<point>`); a no-op otherwise. The
tests kill at every boundary of a resize, a confirm and a revert, restart the process
and check that it converges.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_armed: str = ""


def arm(spec: str) -> None:
    global _armed  # noqa: PLW0603 - one process-wide switch, set once at start-up
    _armed = spec


def point(component: str, name: str) -> None:
    """Called at each step boundary; kills the process if this is the armed one."""
    if _armed and _armed == f"{component}:{name}":
        log.warning("fault injection: SIGKILL at %s:%s", component, name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
