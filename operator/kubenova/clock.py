"""This process's wall clock: the one source of "now" for the times it writes and decides on.

A test can set it off the system clock (`KUBENOVA_CLOCK_SKEW_SECONDS`): a host whose clock
is wrong, without touching the machine's clock. Durations never come from here: elapsed
time, deadlines and leases use `time.monotonic()`, which no skew or clock step moves.
"""

from __future__ import annotations

import datetime

_skew = datetime.timedelta()


def set_skew(seconds: float) -> None:
    global _skew  # noqa: PLW0603 - one process-wide setting, made once at start-up
    _skew = datetime.timedelta(seconds=seconds)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + _skew
