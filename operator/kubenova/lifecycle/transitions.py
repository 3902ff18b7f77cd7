"""The Instance phase machine as data: every legal (from, to) pair, and who may write it.

Only the controller writes `status.phase`. DELETING is reachable from anywhere.
"""

from __future__ import annotations

from kubenova.api.instance import Phase

_ANY_RUNNING = (Phase.ACTIVE, Phase.SHUTOFF)

TRANSITIONS: frozenset[tuple[Phase | None, Phase]] = frozenset(
    {
        (None, Phase.BUILD),
        (Phase.BUILD, Phase.ACTIVE),  # spawned, running
        (Phase.BUILD, Phase.SHUTOFF),  # spawned, stopped (spec.powerState: Stopped)
        (Phase.BUILD, Phase.ERROR),
        (Phase.ACTIVE, Phase.SHUTOFF),  # powered off
        (Phase.SHUTOFF, Phase.ACTIVE),  # powered on
        *((p, Phase.RESIZE) for p in _ANY_RUNNING),  # resize or migrate scheduled
        (Phase.RESIZE, Phase.VERIFY_RESIZE),  # migration finished
        (Phase.RESIZE, Phase.ERROR),  # migration failed before finishing
        *((Phase.VERIFY_RESIZE, p) for p in _ANY_RUNNING),  # confirmed
        (Phase.VERIFY_RESIZE, Phase.REVERT_RESIZE),
        (Phase.VERIFY_RESIZE, Phase.ERROR),  # confirm failed
        *((Phase.REVERT_RESIZE, p) for p in _ANY_RUNNING),  # reverted
        (Phase.REVERT_RESIZE, Phase.ERROR),
        *((Phase.ERROR, p) for p in _ANY_RUNNING),  # the original runs again
        # Phases mirror the Migration: when a reconcile sees a migration that moved on
        # several steps at once (controller restarted, events coalesced) it jumps too.
        *((p, Phase.VERIFY_RESIZE) for p in _ANY_RUNNING),
        *((p, Phase.ERROR) for p in _ANY_RUNNING),
        (Phase.RESIZE, Phase.REVERT_RESIZE),
    }
)


class IllegalTransitionError(ValueError):
    pass


def check(old: Phase | None, new: Phase) -> None:
    if old is new or new is Phase.DELETING or (old, new) in TRANSITIONS:
        return
    raise IllegalTransitionError(f"instance phase cannot go from {old} to {new}")
