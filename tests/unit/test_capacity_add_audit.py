"""A provider ``add`` that fails after starting some of its instances (the 2nd tritonserver
of two never gets ready): the one it started runs and is paid for, so it is in the
failure's report, the ``capacity.apply_failed`` audit event's ``applied`` and a
``capacity.changed`` event (review10 finding 11: all three said nothing of it). The real
loop, actor and gate with the fakes of ``test_capacity_loop``; the local provider with a
stand-in ``TritonProcess``."""

from __future__ import annotations

import pathlib

import pytest
from structlog.testing import capture_logs

from services.capacity import local as local_mod
from services.capacity.actor import ApplyFailed, CapacityActor, PoolTarget
from services.capacity.local import LocalProvider
from services.capacity.model_control import NoRouting
from services.capacity.provider import Instance
from services.config import BackendConfig
from tests.unit.test_capacity_loop import FakeControl, Rig

pytestmark = pytest.mark.asyncio


async def test_an_add_that_fails_midway_audits_the_gpu_it_started(
        tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, apply="auto")
    started = rig.provider.add

    async def second_never_ready(pool: str, count: int) -> list[Instance]:
        await started(pool, 1)  # the 1st is up (in the provider's instances)
        raise TimeoutError(f"{pool}: tritonserver not ready after 60 s")

    rig.provider.add = second_never_ready  # type: ignore[method-assign]
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with capture_logs() as logs, pytest.raises(ApplyFailed) as err:
        await rig.loop.replan("test")
    assert [i.id for i in rig.provider.instances("east")] == ["east-1"]
    assert err.value.report.actions == [("add", "east-1", "")]
    (failed,) = [e for e in logs if e["event"] == "capacity.apply_failed"]
    assert failed["applied"] == [["add", "east-1", ""]]
    assert failed["step"] == ["add", "east", ""] and "not ready" in failed["error"]
    changed = [(e["action"], e["instance"]) for e in logs if e["event"] == "capacity.changed"]
    assert changed == [("add", "east-1")]


class FakeTriton:
    """``TritonProcess`` as LocalProvider uses it; the 2nd made never gets ready."""

    made = 0

    def __init__(self) -> None:
        FakeTriton.made += 1
        self.n = FakeTriton.made
        self.endpoint, self.metrics_url = f"127.0.0.1:{9000 + self.n}", "http://127.0.0.1:1"

    @classmethod
    def for_backend(cls, *_a: object, **_k: object) -> FakeTriton:
        return cls()

    def start(self) -> None:
        return None

    async def wait_ready_async(self, _t: float) -> None:
        if self.n == 2:
            raise TimeoutError("tritonserver not ready after 60 s")

    async def stop_async(self) -> None:
        return None


async def test_the_local_provider_s_partial_add_is_in_the_report(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeTriton.made = 0
    monkeypatch.setattr(local_mod, "TritonProcess", FakeTriton)
    pool = BackendConfig(id="east", region="r-east", accelerator="gpu-cheap", grpc_port=0,
                         variants=["small"])
    provider = LocalProvider(None, {"east": pool}, tmp_path)  # type: ignore[arg-type]
    servers: dict[str, set[str]] = {}
    actor = CapacityActor(provider, NoRouting(), lambda i: FakeControl(i, servers, set()))
    with pytest.raises(ApplyFailed) as err:
        await actor.apply({"east": PoolTarget(2, frozenset({"small"}))})
    assert [i.id for i in provider.instances("east")] == ["east-1"]  # up and paid for
    assert err.value.report.actions == [("add", "east-1", "")]
    assert "not ready" in err.value.message
