"""The capacity loop when its fleet is not what it acted for (review10 finding 4): an
instance whose tritonserver died is no GPU, re-plans still solve, and the applied plan
replaces it (its removal needs no answer from it). The real loop, actor and gate with the
fakes of ``test_capacity_loop``."""

from __future__ import annotations

import pathlib
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from services.capacity.model_control import ModelControlError
from services.placement.capacity_service import plan_response
from tests.unit.test_capacity_loop import FakeControl, Rig

pytestmark = pytest.mark.asyncio


class MayDie(FakeControl):
    """A server that stops answering once its id is in ``dead`` (what ModelControl.loaded
    raises for a closed port: ModelControlError), and whose drain needs it to answer."""

    dead: ClassVar[set[str]] = set()

    async def loaded(self) -> frozenset[str]:
        if self.inst.id in self.dead:
            raise ModelControlError(f"{self.inst.id}: repository index: failed to connect "
                                    "to all addresses")
        return await super().loaded()

    async def drain_and_unload(self, variant: str, gate):  # type: ignore[no-untyped-def]
        if self.inst.id in self.dead:
            raise ModelControlError(f"{self.inst.id}: metrics: connection refused")
        return await super().drain_and_unload(variant, gate)


async def test_a_dead_instance_is_replaced_and_replans_keep_solving(
        tmp_path: pathlib.Path) -> None:
    MayDie.dead = set()
    rig = Rig(tmp_path, apply="auto")
    rig.actor._control_of = lambda i: MayDie(i, rig.servers, rig.fail_load)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    await rig.loop.replan("test")
    assert rig.routed() == {"east-1": ["small"]}
    MayDie.dead.add("east-1")  # its tritonserver dies (OOM, SIGKILL, a reclaimed spot VM)
    rig.clock.t += 5
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with capture_logs() as logs:
        proposal = await rig.loop.replan("outage")  # was ModelControlError, every round
    assert proposal is not None and proposal.decision.adopt
    assert "unreachable, serving nothing" in rig.loop.state.reason
    assert "east-1" in rig.loop.state.reason
    assert [i.id for i in rig.provider.instances("east")] == ["east-2"]
    assert rig.routed() == {"east-2": ["small"]}  # the dead one left the route tables
    changed = [(e["action"], e["instance"]) for e in logs if e["event"] == "capacity.changed"]
    assert changed == [("remove", "east-1"), ("add", "east-2"), ("load", "east-2")]
    assert [p.instances for p in plan_response(rig.loop).current.pools] == [["east-2"]]

