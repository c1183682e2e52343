"""A call through an Envoy edge keeps its attempts until its own deadline (issue 12): real
Triton backends, placement serving ADS, a real Envoy configured only by placement.

Before, each attempt was cut at its per-try timeout (max(250 ms, SLO / 3)) and the call
failed "upstream request timeout" after ``max_attempts`` of them, ~750 ms into a 2 s
deadline; on a loaded host every attempt of a call after a backend was killed took that
long (test_envoy_drills). Now a timed-out attempt runs on beside the next one (Envoy's
``hedge_on_per_try_timeout``, ``services/xds/routes.py``): the call is served by whichever
answers first within the caller's deadline.

What the test waits for is read from Envoy's own counters, not from the host's speed: every
backend's models park their requests (the drills' ``hang`` knob) until the call has used every
attempt it may make (``upstream_rq_retry_limit_exceeded``: its last attempt's per-try timeout
asked for one more), or, cut as before, the call has already failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import tritonclient.grpc as tc

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.launcher import EnvoyEdge
from services.placement.main import RunningPlacement
from tests.envoy_harness import running_envoy_edge
from tests.mesh_harness import eventually, mesh_config, models_parked, summarize_input

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DEADLINE_S = 10.0  # far past max_attempts x 250 ms, however slow the host


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-deadline"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[tuple[RunningPlacement, EnvoyEdge]]:
    async with running_envoy_edge(cfg, tmp_path_factory.mktemp("envoy")) as got:
        yield got


def envoy_counter(envoy: EnvoyEdge, suffix: str) -> int:
    """``suffix`` summed over the model (aggregate) clusters, where the router counts."""
    total = 0
    for line in envoy.admin(f"/stats?filter={suffix}$").splitlines():
        key, _, value = line.partition(": ")
        if key.startswith("cluster.model_") and key.endswith(suffix) and value.isdigit():
            total += int(value)
    return total


def call(envoy: EnvoyEdge) -> dict[str, str]:
    client = tc.InferenceServerClient(envoy.address)
    try:
        return infer_with_trailers(client, "summarize", [summarize_input()], (), DEADLINE_S)[1]
    finally:
        client.close()


async def test_a_call_whose_every_attempt_outlasts_its_per_try_timeout_is_served_in_its_deadline(
        cfg: MeshConfig, edge: tuple[RunningPlacement, EnvoyEdge],
        tritons: dict[str, TritonProcess]) -> None:
    placement, envoy = edge
    assert (await asyncio.to_thread(call, envoy))["x-served-by"]  # routed, served
    assert placement.ads is not None
    order = placement.ads.region_config(envoy.node.region).orders["summarize"]
    assert len({d.split("/")[0] for d in order[:cfg.edge.max_attempts]}) >= 2, order
    limit = await asyncio.to_thread(envoy_counter, envoy, "upstream_rq_retry_limit_exceeded")
    # every deployment of the model, wherever a (re)ordered route may send an attempt
    async with models_parked(cfg, tritons):
        served = asyncio.ensure_future(asyncio.to_thread(call, envoy))

        async def attempts_used() -> bool:
            return served.done() or await asyncio.to_thread(
                envoy_counter, envoy, "upstream_rq_retry_limit_exceeded") > limit

        await eventually(attempts_used, DEADLINE_S,
                         "every attempt the call may make has passed its per-try timeout")
    # Cut at its per-try timeouts (before), the call has failed by now; with its attempts
    # running on, the first to answer once the models resume serves it.
    trailers = await served
    assert trailers["x-served-by"].split("/")[0] in tritons, trailers
    assert trailers["x-attempts"] == str(cfg.edge.max_attempts), trailers
