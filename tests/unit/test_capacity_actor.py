"""The capacity actor's order of work against a fake provider and fake model control."""

from __future__ import annotations

from services.capacity.actor import CapacityActor, PoolTarget
from services.capacity.model_control import DrainReport, NoRouting, RoutingGate
from services.capacity.provider import Instance


class FakeProvider:
    def __init__(self, log: list[tuple[str, str, str]]) -> None:
        self.pools: dict[str, list[Instance]] = {}
        self.log = log
        self.serial = 0

    def instances(self, pool: str) -> list[Instance]:
        return list(self.pools.get(pool, []))

    async def add(self, pool: str, count: int) -> list[Instance]:
        out = []
        for _ in range(count):
            self.serial += 1
            inst = Instance(f"{pool}-{self.serial}", pool, "127.0.0.1:1", "http://x")
            self.pools.setdefault(pool, []).append(inst)
            out.append(inst)
        return out

    async def remove(self, instance: Instance) -> None:
        self.pools[instance.pool].remove(instance)


class FakeControl:
    def __init__(self, inst: Instance, log: list[tuple[str, str, str]],
                 servers: dict[str, set[str]]) -> None:
        self.inst = inst
        self.log = log
        self.models = servers.setdefault(inst.id, set())  # what the "server" has loaded

    async def loaded(self) -> frozenset[str]:
        return frozenset(self.models)

    async def load(self, variant: str) -> None:
        self.models.add(variant)

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        await gate.stop(self.inst, variant)
        self.log.append(("drained", self.inst.id, variant))
        self.models.discard(variant)
        return DrainReport(variant, 0.0, 0)

    async def close(self) -> None:
        return None


async def test_grows_before_it_shrinks_and_drains_what_it_removes() -> None:
    log: list[tuple[str, str, str]] = []
    provider = FakeProvider(log)
    servers: dict[str, set[str]] = {}
    actor = CapacityActor(provider, NoRouting(), lambda i: FakeControl(i, log, servers))
    first = await actor.apply({"a": PoolTarget(2, frozenset({"v1"})),
                               "b": PoolTarget(0, frozenset())})
    assert first.actions == [("add", "a-1", ""), ("load", "a-1", "v1"),
                             ("add", "a-2", ""), ("load", "a-2", "v1")]
    # Move to one GPU of "a" running v2 only, and one new GPU in "b".
    second = await actor.apply({"a": PoolTarget(1, frozenset({"v2"})),
                                "b": PoolTarget(1, frozenset({"v1"}))})
    assert second.actions == [
        ("add", "b-3", ""), ("load", "b-3", "v1"),  # new capacity first
        ("load", "a-1", "v2"),  # the new variant on the GPU that stays
        ("unload", "a-1", "v1"),  # then the old one goes
        ("unload", "a-2", "v1"), ("remove", "a-2", ""),  # the GPU that goes is drained first
    ]
    assert log == [("drained", "a-1", "v1"), ("drained", "a-2", "v1")]
    assert [i.id for i in provider.instances("a")] == ["a-1"]
