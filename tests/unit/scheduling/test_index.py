"""Property: the host index decides exactly as the linear reference scheduler, on any
fleet, usage and request, after any sequence of incremental updates."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from kubenova.scheduling import index, scheduler
from kubenova.scheduling.amounts import NO_OVERHEAD, Amount, Overhead

NAMES = [f"n{i}" for i in range(8)]
# Few distinct values, so ties in the weigher's key and exact fits are common.
small = st.builds(
    Amount,
    st.integers(0, 8),
    st.sampled_from([0, 512, 1024, 2048, 4096]),
    st.integers(0, 40),
)
# What a node's claims add up to, and how many guests hold them.
usages = st.tuples(small, st.integers(0, 4))
# Requests smaller than hosts, so that several hosts usually fit and the order decides.
flavors = st.builds(Amount, st.integers(0, 2), st.sampled_from([0, 512, 1024]), st.integers(0, 10))
labels = st.lists(
    st.tuples(st.sampled_from(["ssd", "zone"]), st.sampled_from(["a", "b"])), max_size=2
)
hosts = st.builds(
    scheduler.Host,
    name=st.sampled_from(NAMES),
    capacity=st.builds(
        Amount, st.integers(1, 8), st.sampled_from([1024, 2048, 4096]), st.integers(10, 40)
    ),
    cpu_ratio=st.sampled_from([1.0, 1.5, 4.0]),
    memory_ratio=st.sampled_from([1.0, 1.5]),
    labels=labels.map(lambda pairs: tuple(sorted(dict(pairs).items()))),
    # Mostly schedulable, so that several hosts compete and the order matters.
    up=st.integers(0, 9).map(lambda n: n > 0),
    disabled=st.integers(0, 9).map(lambda n: n == 0),
    cordoned=st.integers(0, 9).map(lambda n: n == 0),
    overhead=st.sampled_from([NO_OVERHEAD, NO_OVERHEAD, Overhead(295, 8, 2), Overhead(512, 0, 0)]),
)
seen = st.sampled_from([None, None, 0.0, 10.0, 20.0])
# A fleet and its usage to start from, then a sequence of updates: put a host (with its
# heartbeat), set a node's usage, remove a host.
fleets = st.lists(st.tuples(hosts, seen, usages), min_size=1, max_size=len(NAMES)).map(
    lambda rows: (
        [("put", dataclasses.replace(h, name=NAMES[i]), t) for i, (h, t, _) in enumerate(rows)]
        + [("used", NAMES[i], u) for i, (_, _, u) in enumerate(rows)]
    )
)
updates = st.lists(
    st.one_of(
        st.tuples(st.just("put"), hosts, seen),
        st.tuples(st.just("used"), st.sampled_from(NAMES), usages),
        st.tuples(st.just("remove"), st.sampled_from(NAMES), st.none()),
    ),
    max_size=10,
)
requests = st.builds(
    scheduler.Request,
    flavor=flavors,
    node_selector=st.sampled_from([(), (), (), (("ssd", "a"),), (("zone", "b"),)]),
    source=st.sampled_from([None, *NAMES]),
    source_flavor=st.none() | small,
    allow_same_host=st.booleans(),
    only=st.sampled_from([None] * 12 + NAMES[:2]),
    prefer=st.sampled_from([None] * 4 + NAMES[:3]),
)


@settings(max_examples=500, deadline=None)
@given(
    steps=st.tuples(fleets, updates).map(lambda pair: pair[0] + pair[1]),
    request=requests,
    weigher=st.sampled_from(list(scheduler.Weigher)),
    seen_after=st.sampled_from([-1.0, -1.0, 5.0, 15.0]),
)
def test_index_decides_as_the_linear_scheduler(
    steps: list[tuple[str, object, object]],
    request: scheduler.Request,
    weigher: scheduler.Weigher,
    seen_after: float,
) -> None:
    idx = index.HostIndex(weigher)
    fleet: dict[str, tuple[scheduler.Host, float | None]] = {}
    claimed: dict[str, tuple[Amount, int]] = {}
    for op, a, b in steps:
        if op == "put":
            assert isinstance(a, scheduler.Host)
            assert b is None or isinstance(b, float)
            idx.put(a, seen_at=b)
            fleet[a.name] = (a, b)
        elif op == "used":
            assert isinstance(a, str)
            assert isinstance(b, tuple)
            idx.set_used(a, *b)
            claimed[a] = b
        else:
            assert isinstance(a, str)
            idx.remove(a)
            fleet.pop(a, None)
    reference = [
        dataclasses.replace(h, up=h.up and (t is None or t >= seen_after))
        for h, t in fleet.values()
    ]
    # What each host's guests take: their claims and the host's overhead for each.
    used = {
        h.name: claimed[h.name][0] + h.overhead.total(*claimed[h.name])
        for h in reference
        if h.name in claimed
    }
    expected = scheduler.select(reference, used, request, weigher)
    got = idx.select(request, seen_after=seen_after)
    assert (got.node, got.message) == (expected.node, expected.message)
