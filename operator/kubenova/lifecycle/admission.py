"""Admission rules for Instances, shared by the validating webhook and the controller's
re-check (for when the webhook was bypassed or down). Pure.
"""

from __future__ import annotations

from kubenova.api import flavor, instance


def flavor_change_problem(
    old: instance.Instance | None, new: instance.InstanceSpec, chosen: flavor.FlavorSpec | None
) -> str | None:
    """Why `new.flavor` may not be applied, or None. Reverting to status.previousFlavor is
    always allowed: the old flavor may have been disabled or deleted since, and the revert
    restores a disk the instance already had."""
    if old is not None and old.spec.flavor == new.flavor:
        return None
    previous = old.status.previous_flavor if old is not None else None
    if previous is not None and new.flavor == previous.name:
        return None
    if chosen is None:
        return f"flavor {new.flavor} does not exist (see kubectl get flavors)"
    if chosen.disabled:
        return f"flavor {new.flavor} is disabled"
    current = old.status.flavor if old is not None else None
    if current is not None and chosen.disk_gib < current.disk_gib:
        return (
            f"flavor {new.flavor} has a {chosen.disk_gib} GiB disk, smaller than the current "
            f"{current.disk_gib} GiB ({current.name}): disks never shrink"
        )
    return None
