"""The capacity loop when its fleet is not what it acted for (review10 findings 4 and 5): an
instance whose tritonserver died is no GPU, re-plans still solve, and the applied plan
replaces it (its removal needs no answer from it); a variant a server holds loaded that the
gate does not route is not serving, so the next plan routes it, and ModelControl unloads a
load whose warm-up failed. The real loop, actor and gate with the fakes of
``test_capacity_loop``; ModelControl with a stand-in Triton client."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from placement.fleet import TelemetrySnapshot
from services.capacity.actor import ApplyFailed
from services.capacity.model_control import ModelControl, ModelControlError
from services.capacity.provider import Instance
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


async def test_a_loaded_variant_the_gate_does_not_route_is_routed_by_the_next_plan(
        tmp_path: pathlib.Path) -> None:
    """ModelControl.load's order: RepositoryModelLoad succeeds, then the warm-up fails and
    the variant stays READY in Triton (as after a drain that timed out after the gate had
    stopped it): loaded, never routed, and every later plan counted it as serving."""

    class WarmFailsOnce(FakeControl):
        async def load(self, variant: str) -> None:
            self.models.add(variant)  # Triton has it READY
            if not failed:
                failed.append(variant)
                raise ModelControlError(f"{self.inst.id}: warm-up of {variant}: deadline")

    failed: list[str] = []
    rig = Rig(tmp_path, apply="auto")
    rig.actor._control_of = lambda i: WarmFailsOnce(i, rig.servers, rig.fail_load)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with pytest.raises(ApplyFailed):
        await rig.loop.replan("test")
    assert rig.servers == {"east-1": {"small"}} and rig.routed() == {}
    assert [p.variants for p in plan_response(rig.loop).current.pools] == [[]]  # not serving
    rig.clock.t += 5
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with capture_logs() as logs:
        await rig.loop.replan("again")
    assert rig.routed() == {"east-1": ["small"]}, rig.loop.state.reason
    changed = [(e["action"], e["instance"], e["variant"]) for e in logs
               if e["event"] == "capacity.changed"]
    assert changed == [("route", "east-1", "small")]  # an audit event, no second GPU
    assert [list(p.variants) for p in plan_response(rig.loop).current.pools] == [["small"]]


class WarmUpFails:
    """Triton's repository API as ModelControl uses it: the load is taken, the variant READY,
    then the warm-up's inference fails."""

    def __init__(self) -> None:
        self.ready: set[str] = set()

    async def load_model(self, name: str, client_timeout: float) -> None:
        self.ready.add(name)

    async def unload_model(self, name: str, client_timeout: float) -> None:
        self.ready.discard(name)

    async def is_model_ready(self, name: str, client_timeout: float) -> bool:
        return name in self.ready

    async def get_model_config(self, name: str, as_json: bool = False) -> dict[str, Any]:
        return {"config": {"name": name}}

    async def get_model_metadata(self, name: str, as_json: bool = False) -> dict[str, Any]:
        return {"inputs": [{"name": "x", "shape": ["4"], "datatype": "FP32"}]}

    async def get_inference_statistics(self, name: str, as_json: bool,
                                       client_timeout: float) -> Any:
        r = service_pb2.ModelStatisticsResponse()
        r.model_stats.add().name = name
        return r

    async def infer(self, name: str, inputs: list[Any], client_timeout: float) -> None:
        raise InferenceServerException("deadline exceeded")


async def test_a_load_whose_warm_up_fails_leaves_nothing_loaded() -> None:
    control = ModelControl(Instance("i-1", "pool-a", "127.0.0.1:1", "http://127.0.0.1:1"),
                           poll_s=0.001, timeout_s=0.05)
    await control.close()
    fake = control._client = WarmUpFails()
    with pytest.raises(ModelControlError, match=r"warm-up of mid: .*deadline exceeded"):
        await control.load("mid")
    assert fake.ready == set()  # was READY in Triton, holding memory, never routed


async def test_an_instance_whose_telemetry_says_down_is_replaced_at_the_next_round(
        tmp_path: pathlib.Path) -> None:
    """Not at the next scheduled plan (an hour by default): the instances' telemetry poll
    reads a dead server as not ready, and that pool being down is the cadence's outage."""
    MayDie.dead = set()
    rig = Rig(tmp_path, apply="auto")
    rig.actor._control_of = lambda i: MayDie(i, rig.servers, rig.fail_load)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    await rig.loop.replan("test")
    rig.clock.t += 5
    rig.calls("static-1/small", 3.0)
    assert rig.loop.observe() is None  # nothing due: the plan serves the demand
    MayDie.dead.add("east-1")
    # what InstanceTelemetry.poll ingests for a server that refuses connections
    rig.service.fleet.ingest("east-1", TelemetrySnapshot(ready=False, simulated=True),
                             rig.clock.t)
    rig.clock.t += 5
    rig.calls("static-1/small", 3.0)
    await rig.loop.step()
    assert rig.loop.state.reason.startswith("pools down: east"), rig.loop.state.reason
    assert rig.routed() == {"east-2": ["small"]}
    assert [i.id for i in rig.provider.instances("east")] == ["east-2"]


async def test_a_server_that_accepts_and_never_answers_is_unreachable_not_a_hang() -> None:
    """A stopped (SIGSTOP) or partitioned server keeps its port open and says nothing: the
    read of what it loaded gives up after ``timeout_s`` (ModelControlError: the loop reads
    it as unreachable) instead of holding every re-plan for good."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accept, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    control = ModelControl(Instance("i-1", "pool-a", f"127.0.0.1:{port}", "http://x"),
                           timeout_s=0.5)
    try:
        with pytest.raises(ModelControlError, match="i-1: repository index"):
            await asyncio.wait_for(control.loaded(), 10.0)  # was: no deadline at all
    finally:
        await control.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
