"""A hostile caller against the edge's metrics, round 11, on both engines: one Envoy edge
(placement's config, the module where it loads) and its slow path (the co-located Python
edge, called directly as *the Python edge*); real Triton backends
(``envoy_harness.hostile_fixtures``), tenants known by their bearer tokens over plaintext.

- A ModelInfer the edge refuses before routing it, on its tenant (a credential it does not
  know, a tenant over its quota) or its size, is counted in ``switchyard_edge_calls_total``
  (and logged) under the model its message names, as every other call is. Before, such a call
  had no model and was counted under ``unknown``, the label README gives model names outside
  the route table: a tenant hammering ``summarize`` past its quota showed as calls to a model
  the mesh lacks, on both engines (Envoy sends a call with a credential to its slow path). A
  stream refused on its headers has read no message yet: ``unknown`` there is the truth.
- Callers whose deadline runs out while the backends hold their calls, 100 on each engine,
  20 at once, teach nothing against the deployments (pinned, found right): no ejection in
  the Python edge's health view nor in Envoy's outlier detection, no failure in what the
  edges report to placement, and placement's estimates (each row's p95 as pushed) no higher
  after them than before. (Checked able to fail: with the edge holding a caller's cancel or
  deadline against the backend, ``attempts.caller_gave_up`` always False or a health
  failure on a cancelled attempt, the health view holds the deployments ejected.) Probes that found
  nothing else wrong (both engines, the module and the Lua alike): each refused hint, an
  unknown or hostile model name, a hostile ``x-request-id``, a deadline out or a cancel at a
  parked backend, streams OK / cancelled / unknown counted as README says; a stream refused
  and kept open by its caller, or sent more messages, ends at once with the same status;
  100 streams at once under 10-300 ms deadlines eject nothing (some see ``INTERNAL: Internal
  error from Core`` on both engines: the caller's own gRPC, not an edge's answer).
- A stream whose backend stops mid-generation while its caller reads nothing ends
  UNAVAILABLE naming the silent backend within its deadline on both engines (pinned, found
  right: the stop with a reading caller is ``test_envoy_stream_hostile``'s).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from services.security.settings import SecuritySettings, TenantSettings
from tests.envoy_harness import EnvoyMesh, hostile_fixtures
from tests.integration.test_envoy_hostile import assert_nothing_ejected_since, ejections
from tests.integration.test_envoy_stream_hostile import opened, outcome, served_stream
from tests.llm_harness import PROMPT
from tests.mesh_harness import eventually, mesh_config, models_parked, raw_infer, request_bytes
from tests.metrics_harness import Series, delta, parse, pick

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile11")

OPEN = "Bearer open-token"  # tenant open: anywhere
LIMITED = "Bearer limited-token"  # tenant limited: one call or stream at a time


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile11"))
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="open", token="open-token"),
        TenantSettings(name="limited", token="limited-token", max_concurrency=1),
    ])
    return base.model_copy(update={"security": sec})


def series(mesh: EnvoyMesh) -> Series:
    """The slow path's /metrics: what the Python edge counts, Envoy's slow-path calls too."""
    assert mesh.slow.metrics is not None
    return parse(generate_latest(mesh.slow.metrics.registry).decode())


def refused(d: Series, model: str, status: str) -> float:
    return pick(d, "switchyard_edge_calls_total", model=model, deployment="", status=status)


async def test_a_modelinfer_refused_on_its_tenant_is_counted_under_its_model_on_both(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """A credential the edge does not know, and tenant ``limited`` past its one call at a time
    (a stream of its own held open), on each engine: counted under ``summarize``, nothing
    under ``unknown``. Fails on the old edge (both engines): 4 UNAUTHENTICATED and 2
    RESOURCE_EXHAUSTED under ``unknown``."""
    before = series(mesh)
    seen: list[str] = []
    for ch in engines.values():
        code, _, _ = await raw_infer(ch, [("authorization", "Bearer no-such-token")])
        seen.append(code.name)
        code, _, _ = await raw_infer(ch, [("authorization", "Bearer no-such-token")],
                                           request_bytes("generate"))
        seen.append(code.name)
        st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        held = st(iter([llm_request("generate", [1, 2, 3], 40)]), timeout=20,
                  metadata=[("authorization", LIMITED)])
        responses = held.__aiter__()
        await anext(responses)  # the stream holds the tenant's one slot from here
        code, _, _ = await raw_infer(ch, [("authorization", LIMITED)])
        seen.append(code.name)
        async for _ in responses:
            pass
        assert await held.code() == grpc.StatusCode.OK
    assert seen == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"] * 2, seen

    def counted() -> bool:
        return pick(delta(series(mesh), before), "switchyard_edge_calls_total") >= 8

    await eventually(counted, 5, "every call counted")
    d = delta(series(mesh), before)
    assert refused(d, "summarize", "UNAUTHENTICATED") == 2
    assert refused(d, "generate", "UNAUTHENTICATED") == 2
    assert refused(d, "summarize", "RESOURCE_EXHAUSTED") == 2
    assert pick(d, "switchyard_edge_calls_total", model="unknown") == 0
    assert pick(d, "switchyard_edge_calls_total") == 8  # and the two held streams, OK
    # refused before routing: no SLO, no attempt
    assert pick(d, "switchyard_edge_slo_calls_total", model="summarize") == 0
    assert pick(d, "switchyard_edge_attempts_total", model="summarize") == 0


def envoy_requests(mesh: EnvoyMesh) -> int:
    """Requests Envoy's listener took."""
    return mesh.envoy_stat("http.switchyard.downstream_rq_total")


def rows(mesh: EnvoyMesh) -> dict[str, Any]:
    """``summarize``'s rows as placement pushed them to this region (the slow path's)."""
    return {c.deployment_id: c for c in mesh.slow.router.store.candidates["summarize"]}


def p95(mesh: EnvoyMesh, deployment: str) -> float:
    """Placement's estimate of ``deployment`` (its row's p95)."""
    return float(rows(mesh)[deployment].latency_p95_ms)


async def test_callers_deadlines_shorter_than_the_service_time_teach_nothing(
        cfg: MeshConfig, mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        tritons: dict[str, TritonProcess]) -> None:
    """100 callers on each engine, 20 at once, whose 200 ms deadline runs out while every backend
    holds their calls (the demo model's ``hang`` knob: its health checks pass), under the
    attempt's own timeout (``min_attempt_timeout_s``, 250 ms): each DEADLINE_EXCEEDED,
    nothing ejected, no failure the edges report to placement, and placement's estimate of
    each deployment, once it has heard the window, what it was (within x1.5 + 25 ms for the
    host's noise: a p95 taught by these callers would read near their 200 ms)."""
    fb = mesh.placement.ads.feedback if mesh.placement.ads is not None else None
    assert fb is not None
    stats = mesh.slow.router.stats
    before = {d: p95(mesh, d) for d in rows(mesh)}
    failures = sum(s.failures for s in stats.by_deployment.values())
    ejected, heard, requests = await ejections(mesh), fb.entries, envoy_requests(mesh)
    # what the Python edge held unusable before (an earlier test's ejection may still run)
    unusable = dict(mesh.slow.router.health.view().unusable)
    async with models_parked(cfg, tritons):
        got = []
        with mesh.records() as records:
            for _ in range(5):  # 20 at once on each engine, 5 times
                got += await asyncio.gather(*(raw_infer(ch, [("x-slo-ms", "1000")], None, 0.2)
                                              for ch in engines.values() for _ in range(20)))
        assert [code.name for code, _, _ in got] == ["DEADLINE_EXCEEDED"] * 200
        # Most reached a backend on each engine (a caller's own client may let a deadline
        # run out before it sends): the Python edge's attempts, and Envoy's requests, every
        # one logged to placement.
        assert sum(1 for r in records if r.attempts) >= 50, len(records)

        def heard_all() -> bool:  # every call Envoy took is in placement's access log (with
            # what an earlier call's entry flushed late, should one have)
            sent = envoy_requests(mesh) - requests
            return sent >= 50 and fb.entries - heard >= sent

        await eventually(heard_all, 30, "placement heard every call Envoy took")
        await asyncio.sleep(2)  # the edges' reports (every 0.5 s) and the backends' telemetry
        retried = [(r.status, r.attempts, r.chosen and r.chosen.deployment_id,
                    round(r.latency_ms)) for r in records if r.attempts > 1]
        now_unusable = mesh.slow.router.health.view().unusable
        # nothing newly unusable (once in ~15 runs of the module west-cheap's deployments
        # were; the check was then absolute, so an ejection from before the window counted
        # too: ``retried`` says which calls had an attempt fail before their deadline)
        assert {d: why for d, why in now_unusable.items() if unusable.get(d) != why} == {}, (
            retried, unusable)
        await assert_nothing_ejected_since(mesh, ejected)
        assert sum(s.failures for s in stats.by_deployment.values()) == failures
        after = {d: p95(mesh, d) for d in rows(mesh)}
    # A deployment taught by these callers would read about their 200 ms deadline; the host's
    # noise moves a p95 of a few ms by a few ms (CI, quiet host: 12.5 ms where it was less).
    grew = {d: (before[d], after[d]) for d in before if after[d] > before[d] * 1.5 + 25}
    assert grew == {}, grew


async def test_a_stream_whose_backend_stops_while_its_caller_does_not_read_ends_alike(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        tritons: dict[str, TritonProcess]) -> None:
    """A 2,000-token stream allowed r-east only (no other deployment to resume on): its
    caller reads the first token, its backend stops (SIGSTOP: the connection stays open and
    says nothing) and the caller reads nothing more for 4 s. On both engines it ends
    UNAVAILABLE naming the silent backend, within its 15 s deadline, and the backend's drain
    ends once it runs again. Pinned, found right."""
    east = (("x-allowed-regions", "r-east"),)
    seen = {}
    for name, ch in engines.items():
        await eventually(lambda: served_stream(mesh, 2, east), 30, "r-east serves a stream")
        t0 = time.monotonic()
        call = opened(ch, iter([llm_request("generate", PROMPT, 2000)]), 15, east)
        await call.read()
        backend = str(dict(await call.initial_metadata())["x-served-by"]).split("/")[0]
        os.kill(tritons[backend].pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(4)  # the caller reads nothing
            code, details, took, _ = await outcome(call, t0)
        finally:
            os.kill(tritons[backend].pid, signal.SIGCONT)
        seen[name] = code
        assert f"{backend} sent nothing for" in details, (name, details)
        assert took < 15, (name, took)
        await eventually(lambda: not mesh.slow.router.upstreams.draining, 30,
                         "the stopped backend's drain ends once it runs again")
    assert seen == dict.fromkeys(engines, grpc.StatusCode.UNAVAILABLE), seen
