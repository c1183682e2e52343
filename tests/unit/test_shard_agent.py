"""An agent of a sharded placement (issue 15, scale-out): each backend's registration and
telemetry go to the shard owning its region, over real gRPC to in-process placements."""

from __future__ import annotations

import pathlib

import pytest

from services.agent.agent import NodeAgent
from services.placement.main import start_placement
from tests.mesh_harness import eventually
from tests.unit.test_agent import NEVER, NO_GPU, FakeStats
from tests.unit.test_shard_placement import _two_shards

ALL = ["east-fast", "central-cheap", "west-cheap"]


@pytest.mark.parametrize("fan_out", [False, True])
async def test_each_backend_reports_to_the_shard_of_its_region(
        tmp_path: pathlib.Path, fan_out: bool) -> None:
    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0], preregister=False)
    rest = await start_placement(cfg, port=ports[1], preregister=False)
    agent = NodeAgent(cfg, ALL, interval_s=0.05, nvml=NO_GPU, agent_id="agent-shards",
                      stats_factory=lambda b: FakeStats(b.variants, busy_ns=1_000_000),
                      nvml_retry_s=(NEVER, NEVER), fan_out=fan_out)
    assert [[b.id for b in bs] for _, bs in agent.shards] == [["east-fast"],
                                                              ["central-cheap", "west-cheap"]]
    await agent.start()
    try:
        await eventually(lambda: len(east.service.gpus) == 1 and len(rest.service.gpus) == 2,
                         10, "telemetry at both shards")
        assert set(east.service.fleet.backends) == set(east.service.gpus) == {"east-fast"}
        assert set(rest.service.fleet.backends) == set(rest.service.gpus) == {
            "central-cheap", "west-cheap"}
        assert agent.sessions == 2  # no session broke on a backend its shard refused
    finally:
        await agent.stop()
        await east.stop(0)
        await rest.stop(0)


def test_given_addresses_mean_no_sharding(tmp_path: pathlib.Path) -> None:
    cfg, ports = _two_shards(tmp_path)
    agent = NodeAgent(cfg, ALL, placement=[f"127.0.0.1:{ports[0]}"], nvml=NO_GPU)
    assert agent.shards == []
