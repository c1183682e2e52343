"""The simulated provider on a virtual clock: provisioning delay, reclaims, the bill."""

from __future__ import annotations

import pytest

from placement.errors import ConfigError
from services.capacity.actor import CapacityActor, PoolTarget
from services.capacity.model_control import DrainReport, NoRouting, RoutingGate
from services.capacity.provider import Instance
from services.capacity.simulated import SimPool, SimulatedProvider


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def provider(clock: VirtualClock) -> SimulatedProvider:
    return SimulatedProvider({"od": SimPool(3.6, "on-demand", 120.0),
                              "spot": SimPool(1.8, "spot", 60.0)}, clock.now, clock.sleep)


async def test_gpus_arrive_after_the_delay_and_are_billed_while_they_boot() -> None:
    clock = VirtualClock()
    p = provider(clock)
    added = await p.add("od", 2)
    assert clock.t == 120.0  # add returned once they were provisioned
    assert p.instances("od") == added
    clock.t = 100.0
    assert p.instances("od") == []  # still booting at 100 s
    clock.t = 120.0
    assert p.gpu_seconds("od") == pytest.approx(240.0)  # 2 GPUs × 120 s of booting
    clock.t = 3600.0
    await p.remove(added[0])
    clock.t = 7200.0
    assert p.instances("od") == [added[1]]
    assert p.gpu_seconds("od") == pytest.approx(3600.0 + 7200.0)
    assert p.billed_usd() == pytest.approx(3.0 * 3.6)


async def test_reclaim_takes_spot_gpus_back_and_stops_their_bill() -> None:
    clock = VirtualClock()
    p = provider(clock)
    first, second = await p.add("spot", 2)
    clock.t = 3600.0
    assert p.reclaim("spot", 1) == [second]
    assert p.instances("spot") == [first]
    clock.t = 7200.0
    assert p.gpu_seconds("spot") == pytest.approx(7200.0 + 3600.0)
    with pytest.raises(ConfigError, match="only spot"):
        p.reclaim("od", 1)


class NullControl:
    def __init__(self, inst: Instance) -> None:
        self.models: set[str] = set()

    async def loaded(self) -> frozenset[str]:
        return frozenset(self.models)

    async def load(self, variant: str) -> None:
        self.models.add(variant)

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        self.models.discard(variant)
        return DrainReport(variant, 0.0, 0)

    async def close(self) -> None:
        return None


async def test_the_actor_replaces_a_reclaimed_gpu() -> None:
    clock = VirtualClock()
    p = provider(clock)
    actor = CapacityActor(p, NoRouting(), NullControl)
    target = {"spot": PoolTarget(2, frozenset({"v"}))}
    await actor.apply(target)
    (gone,) = p.reclaim("spot", 1)
    report = await actor.apply(target)
    assert [a[0] for a in report.actions] == ["add", "load"]
    assert len(p.instances("spot")) == 2
    assert gone not in p.instances("spot")
