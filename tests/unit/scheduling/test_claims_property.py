"""Property: no sequence of creates, resizes, migrations, confirms, reverts and deletes
overcommits a hypervisor, when every decision goes through the scheduler and the claim
rules of kubenova.scheduling.claims (the controller's own loop, minus the API)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kubenova.scheduling import claims, scheduler
from kubenova.scheduling.amounts import Amount

FLAVORS = [Amount(1, 512, 1), Amount(1, 2048, 20), Amount(2, 4096, 40), Amount(4, 8192, 80)]
HOSTS = [
    scheduler.Host(name=f"n{i}", capacity=Amount(4, 12288, 160), cpu_ratio=1.0) for i in range(3)
]


class Fleet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.placements: dict[str, claims.Placement] = {}
        self.counter = 0

    def used(self) -> dict[str, Amount]:
        return {n: u.amount for n, u in claims.usage(self.placements.values()).items()}

    def idle(self) -> list[str]:
        return sorted(k for k, p in self.placements.items() if not p.migrating)

    def moving(self) -> list[str]:
        return sorted(k for k, p in self.placements.items() if p.migrating)

    @rule(flavor=st.sampled_from(FLAVORS))
    def create(self, flavor: Amount) -> None:
        decision = scheduler.select(HOSTS, self.used(), scheduler.Request(flavor))
        if decision.node:
            self.counter += 1
            key = f"i{self.counter}"
            self.placements[key] = claims.Placement(owner=key, node=decision.node, flavor=flavor)

    @precondition(lambda self: self.idle())
    @rule(data=st.data(), flavor=st.sampled_from(FLAVORS), migrate=st.booleans())
    def resize_or_migrate(self, data: st.DataObject, flavor: Amount, migrate: bool) -> None:
        key = data.draw(st.sampled_from(self.idle()))
        p = self.placements[key]
        assert p.node
        assert p.flavor
        new = p.flavor if migrate else flavor
        request = scheduler.Request(
            new, source=p.node, source_flavor=p.flavor, allow_same_host=not migrate
        )
        decision = scheduler.select(HOSTS, self.used(), request)
        if decision.node:
            self.placements[key] = claims.Placement(
                owner=key,
                node=p.node,
                flavor=p.flavor,
                source=p.node,
                dest=decision.node,
                old_flavor=p.flavor,
                new_flavor=new,
            )

    @precondition(lambda self: self.moving())
    @rule(data=st.data(), confirm=st.booleans())
    def confirm_or_revert(self, data: st.DataObject, confirm: bool) -> None:
        key = data.draw(st.sampled_from(self.moving()))
        p = self.placements[key]
        node, flavor = (p.dest, p.new_flavor) if confirm else (p.source, p.old_flavor)
        self.placements[key] = claims.Placement(owner=key, node=node, flavor=flavor)

    @precondition(lambda self: self.placements)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        del self.placements[data.draw(st.sampled_from(sorted(self.placements)))]

    @invariant()
    def no_host_overcommitted(self) -> None:
        for h in HOSTS:
            used = self.used().get(h.name, Amount())
            assert used.fits_in(h.limit), f"{h.name}: {used} > {h.limit}"


Fleet.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestFleet = Fleet.TestCase
