"""The warm-up's baseline counts every cold call, even when Triton's statistics count the
last one after its response reached the client (Triton counts a call when it releases the
request: seen in CI, a baseline of 1 inference after 2 cold calls). A stand-in for the
Triton client that answers its statistics one call late, the rest as Triton's gRPC API."""

from __future__ import annotations

from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from services.capacity.model_control import ModelControl, ModelControlError
from services.capacity.provider import Instance

pytestmark = pytest.mark.asyncio


class LateStatistics:
    """Inferences counted one statistics read after they were answered."""

    def __init__(self) -> None:
        self.answered = 0
        self.counted = 0
        self.reads = 0
        self.stuck = False  # statistics that stop counting

    async def get_model_config(self, name: str, as_json: bool = False) -> dict[str, Any]:
        return {"config": {"name": name}}

    async def get_model_metadata(self, name: str, as_json: bool = False) -> dict[str, Any]:
        return {"inputs": [{"name": "x", "shape": ["-1", "4"], "datatype": "FP32"}]}

    async def infer(self, name: str, inputs: list[Any], client_timeout: float) -> None:
        self.answered += 1

    async def get_inference_statistics(self, name: str, as_json: bool,
                                       client_timeout: float) -> Any:
        self.reads += 1
        r = service_pb2.ModelStatisticsResponse()
        s = r.model_stats.add()
        s.name, s.inference_count = name, self.counted
        if not self.stuck:  # the calls answered so far are counted by the next read
            self.counted = self.answered
        return r


async def test_the_baseline_counts_every_cold_call_when_triton_counts_late() -> None:
    control = ModelControl(Instance("i-1", "pool-a", "127.0.0.1:1", "http://127.0.0.1:1"),
                           poll_s=0.001, warm_calls=3, cold_calls=2)
    await control.close()
    fake = control._client = LateStatistics()
    assert await control.warm("mid") == 5
    base = control.baselines[("i-1", "mid")]
    assert base.inference_count == 2  # the old read right after the calls: 0 of them
    assert fake.answered == 5 and fake.reads >= 3  # it waited for the count


async def test_a_count_that_never_comes_fails_the_warm_up_naming_it() -> None:
    control = ModelControl(Instance("i-1", "pool-a", "127.0.0.1:1", "http://127.0.0.1:1"),
                           poll_s=0.001, timeout_s=0.05, warm_calls=1, cold_calls=2)
    await control.close()
    fake = control._client = LateStatistics()
    fake.stuck = True  # a Triton whose statistics fall behind for good
    with pytest.raises(ModelControlError, match=r"statistics count 0 inferences .* warm-up"):
        await control.warm("mid")
