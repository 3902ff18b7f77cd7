"""Filters, weighers and the same-host rule."""

from __future__ import annotations

import pytest

from kubenova.scheduling import amounts, scheduler
from kubenova.scheduling.amounts import Amount

BIG = Amount(8, 8192, 100)


def host(name: str, **kw):  # type: ignore[no-untyped-def]
    return scheduler.Host(name=name, capacity=kw.pop("capacity", BIG), cpu_ratio=1.0, **kw)


@pytest.mark.parametrize(
    ("hosts", "used", "request_", "expected"),
    [
        (
            [host("a"), host("b")],
            {"a": Amount(0, 4096, 0)},
            scheduler.Request(Amount(1, 512, 1)),
            "b",
        ),
        ([host("a"), host("b")], {}, scheduler.Request(Amount(1, 512, 1)), "a"),  # tie: by name
        ([host("a", up=False), host("b")], {}, scheduler.Request(Amount(1, 512, 1)), "b"),
        ([host("a", disabled=True), host("b")], {}, scheduler.Request(Amount(1, 512, 1)), "b"),
        ([host("a", cordoned=True), host("b")], {}, scheduler.Request(Amount(1, 512, 1)), "b"),
        (
            [host("a"), host("b", labels=(("ssd", "yes"),))],
            {},
            scheduler.Request(Amount(1, 512, 1), node_selector=(("ssd", "yes"),)),
            "b",
        ),
        ([host("a"), host("b")], {}, scheduler.Request(Amount(1, 512, 1), only="b"), "b"),
        # A live resize stays on its node whenever it fits, whatever the weigher prefers;
        # when it does not fit, the weigher decides among the rest.
        ([host("a"), host("b")], {}, scheduler.Request(Amount(1, 512, 1), prefer="b"), "b"),
        (
            [host("a"), host("b", disabled=True)],
            {},
            scheduler.Request(Amount(1, 512, 1), prefer="b"),
            "a",
        ),
        (
            [host("a"), host("b")],
            {},
            scheduler.Request(
                Amount(1, 512, 1),
                source="a",
                source_flavor=Amount(1, 512, 1),
                allow_same_host=False,
            ),
            "b",
        ),
        ([host("a")], {}, scheduler.Request(Amount(16, 512, 1)), None),
    ],
    ids=[
        "spread-to-free",
        "tie-by-name",
        "skip-down",
        "skip-disabled",
        "skip-cordoned",
        "node-selector",
        "named-host",
        "preferred-host",
        "preferred-host-does-not-fit",
        "migrate-not-same-host",
        "too-big",
    ],
)
def test_select(hosts, used, request_, expected) -> None:  # type: ignore[no-untyped-def]
    assert scheduler.select(hosts, used, request_).node == expected


def test_pack_prefers_the_fullest_host() -> None:
    hosts = [host("a"), host("b")]
    used = {"a": Amount(0, 4096, 0)}
    assert (
        scheduler.select(
            hosts, used, scheduler.Request(Amount(1, 512, 1)), scheduler.Weigher.PACK
        ).node
        == "a"
    )


def test_same_host_resize_claims_the_maximum_not_the_sum() -> None:
    """Nova bug 1790204: a host with room for max(old, new) but not old + new must fit."""
    only = [host("a", capacity=Amount(2, 3000, 30))]
    used = {"a": Amount(1, 2048, 20)}  # the instance itself, on m1.small
    request = scheduler.Request(Amount(2, 2048, 20), source="a", source_flavor=Amount(1, 2048, 20))
    assert scheduler.select(only, used, request).node == "a"


def test_allocation_ratio_scales_capacity() -> None:
    h = scheduler.Host(name="a", capacity=Amount(2, 1000, 10), cpu_ratio=4.0, memory_ratio=1.5)
    assert h.limit == Amount(8, 1500, 10)


def test_no_valid_host_message_counts_reasons() -> None:
    hosts = [
        host("a", up=False),
        host("b", capacity=Amount(1, 256, 1)),
        host("c", capacity=Amount(1, 256, 1)),
    ]
    decision = scheduler.select(hosts, {}, scheduler.Request(Amount(1, 512, 1)))
    assert decision.node is None
    assert decision.message == "no valid host among 3 hypervisors: 1 down, 2 short of memory"


def test_peak_is_per_resource() -> None:
    assert amounts.peak(Amount(4, 512, 1), Amount(1, 2048, 20)) == Amount(4, 2048, 20)


LAUNCHER = amounts.Overhead(295, 8, 2)  # KubeVirt's: drivers/vm.py


def test_a_guest_costs_its_flavor_and_the_hosts_overhead_for_it() -> None:
    """A 2 GiB KubeVirt node holds three 512 MiB guests by their flavors alone, but each
    launcher pod takes 312 MiB beside its guest: two fit (1648 MiB), a third does not."""
    kubevirt = host("kv", capacity=Amount(8, 2048, 100), overhead=LAUNCHER)
    libvirt = host("lv", capacity=Amount(8, 2048, 100))
    flavor = Amount(2, 512, 1)
    two = Amount(4, 1024, 2) + LAUNCHER.total(Amount(4, 1024, 2), guests=2)
    assert two.memory_mib == 1648
    assert scheduler.rejection(kubevirt, scheduler.Request(flavor), two) == "short of memory"
    assert scheduler.rejection(libvirt, scheduler.Request(flavor), Amount(4, 1024, 2)) is None


def test_a_same_host_resize_pays_the_overhead_once() -> None:
    """The old and the new flavor never run together: one launcher, for the larger one."""
    kubevirt = host("kv", capacity=Amount(8, 1400, 100), overhead=LAUNCHER)
    old, new = Amount(1, 512, 1), Amount(2, 1024, 2)
    used = old + LAUNCHER.of(old)  # 816 MiB
    resize = scheduler.Request(new, source="kv", source_flavor=old)
    assert scheduler.rejection(kubevirt, resize, used) is None  # 1024 + 313 = 1337 MiB
    assert scheduler.rejection(kubevirt, scheduler.Request(new), used) == "short of memory"
