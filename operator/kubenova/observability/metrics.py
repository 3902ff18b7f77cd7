"""Every kubenova metric, defined once: names, help, labels, buckets.

Names follow Prometheus conventions: the `kubenova_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` for counters. Label values are small closed sets (step
names, outcomes, reasons) or hypervisor names, never instance names: one series per
instance would grow with the fleet.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import prometheus_client as prom

from kubenova.scheduling import scheduler

T = TypeVar("T")

# A fake-driver step takes milliseconds, a libvirt disk copy minutes: cover both.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# A user-visible resize: seconds (fake driver) to an hour (a large disk, or a long wait).
RESIZE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# One decision over the in-memory hosts: microseconds to (at scale) tens of milliseconds.
SCHEDULING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1,
)

# --- agent ---------------------------------------------------------------------------------

AGENT_STEP_SECONDS = prom.Histogram(
    "kubenova_agent_step_duration_seconds",
    "Time one driver step took on this node (Nova's virt driver calls).",
    ["step", "driver"],
    buckets=STEP_BUCKETS,
)
AGENT_STEP_FAILURES = prom.Counter(
    "kubenova_agent_step_failures_total",
    "Driver steps that raised on this node.",
    ["step", "driver"],
)

# --- controller ----------------------------------------------------------------------------

RESIZE_SECONDS = prom.Histogram(
    "kubenova_resize_duration_seconds",
    "From the user's request (spec.flavor edited, or the migrate annotation set) to "
    "VERIFY_RESIZE (outcome verify_resize) or to a failed migration (outcome error).",
    ["type", "outcome"],
    buckets=RESIZE_BUCKETS,
)
RESIZE_FINISH_SECONDS = prom.Histogram(
    "kubenova_resize_finish_duration_seconds",
    "From confirm or revert to the instance ACTIVE/SHUTOFF again "
    "(outcome confirmed, reverted or error).",
    ["type", "outcome"],
    buckets=RESIZE_BUCKETS,
)
SCHEDULING_SECONDS = prom.Histogram(
    "kubenova_scheduling_duration_seconds",
    "Time one scheduling decision took (filters and weigher over the host index).",
    buckets=SCHEDULING_BUCKETS,
)
SCHEDULING_FAILURES = prom.Counter(
    "kubenova_scheduling_failures_total",
    "Scheduling decisions that found no host, by reason; each retry of a waiting resize counts.",
    ["reason"],
)


STEPS = (
    "spawn",
    "power_off",
    "power_on",
    "migrate_disk_and_power_off",
    "finish_migration",
    "confirm_migration",
    "finish_revert_migration",
    "release_migration",
    "destroy",
    "transfer_disk",
)


def start_agent_series(driver: str) -> None:
    """Create every step's series at zero, so rates and absent-series alerts work from
    the first scrape (Prometheus advice: initialise known label values)."""
    for step in STEPS:
        AGENT_STEP_SECONDS.labels(step=step, driver=driver)
        AGENT_STEP_FAILURES.labels(step=step, driver=driver)


def start_controller_series() -> None:
    """The controller's labelled series at zero (see start_agent_series)."""
    for kind in ("resize", "migrate"):
        for outcome in ("verify_resize", "error"):
            RESIZE_SECONDS.labels(type=kind, outcome=outcome)
        for outcome in ("confirmed", "reverted", "error"):
            RESIZE_FINISH_SECONDS.labels(type=kind, outcome=outcome)
    SCHEDULING_FAILURES.labels(reason="NoValidHost")


def scheduled(started: float, decision: scheduler.Decision) -> scheduler.Decision:
    """Record a decision that began at `started` (time.perf_counter()); returns it."""
    SCHEDULING_SECONDS.observe(time.perf_counter() - started)
    if decision.node is None:
        SCHEDULING_FAILURES.labels(reason="NoValidHost").inc()
    return decision


async def timed_step(step: str, driver: str, work: Awaitable[T]) -> T:
    """Await one driver step, recording its duration (and its failure, if it raises)."""
    started = time.perf_counter()
    try:
        return await work
    except Exception:  # not cancellation: a step cut short by shutdown did not fail
        AGENT_STEP_FAILURES.labels(step=step, driver=driver).inc()
        raise
    finally:
        AGENT_STEP_SECONDS.labels(step=step, driver=driver).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every registered metric, and its content type."""
    return prom.generate_latest(prom.REGISTRY), prom.CONTENT_TYPE_LATEST


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in an exposition: for tests and tools."""
    from prometheus_client import parser  # noqa: PLC0415 - only readers need the parser

    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, dict(sample.labels), sample.value
