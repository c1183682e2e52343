"""LLM streams through a real edge and real Triton backends: token trailers, stream hints,
choosing by TPOT, the fleet's learning reaching a fresh edge through placement, and a stream
that survives the SIGKILL of its backend mid-generation."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from placement.streams import FALLBACK_BAND, StreamOption
from services import demo_streams
from services.api.switchyard.v1 import edge_pb2_grpc, placement_pb2, placement_pb2_grpc
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.drills.streams import run_stream_drill
from services.edge.main import start_edge
from services.edge.token_stats import usd_per_second
from services.edge.tokens import llm_request, parse_token
from services.stream_explain import token_section
from tests import llm_harness
from tests.llm_harness import (
    PROMPT,
    STREAM,
    PlanLog,
    Planned,
    Stream,
    cold_prefill_ms,
    direct,
    emulated_ms,
    kill_when,
    run_stream,
    slow_when,
    stop_when,
)
from tests.mesh_harness import Mesh, eventually, mesh_config, running_mesh

pytestmark = pytest.mark.integration
killed = llm_harness.killed  # the fixture: backends a test killed, restarted after it
slowed = llm_harness.slowed  # the fixture: backends a test slowed down, restored after it
stopped = llm_harness.stopped  # the fixture: backends a test stopped, continued after it
plans = llm_harness.plans  # the fixture: the in-process edge's stream plans, recorded



@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    """The harness mesh, with the LLM variant on all three backends: it decodes at 2.5
    ms/token on east-fast (speed 4) and 10 ms/token on the two cheap ones (speed 1), and
    prefills 0.0625 / 0.25 ms per prompt token (all emulated). The two cheap GPUs cost the
    same here, so a session's prefix holder is a real choice between equals."""
    tmp = tmp_path_factory.mktemp("llm")
    raw = mesh_config(tmp).model_dump()
    gen = next(m for m in raw["models"] if m["name"] == "generate")
    gen["variants"][0]["matmul_iters"] = 5
    next(b for b in raw["backends"] if b["id"] == "central-cheap")["variants"].append(
        "generate-small")
    prices = tmp / "prices.toml"
    prices.write_text(prices.read_text().replace("usd_per_gpu_hour = 0.90",
                                                 "usd_per_gpu_hour = 0.30"))
    return MeshConfig.model_validate(raw)


@pytest.fixture
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess]) -> AsyncIterator[Mesh]:
    async with running_mesh(cfg, tritons) as m:
        yield m


async def test_stream_carries_token_trailers(mesh: Mesh) -> None:
    expected = await asyncio.to_thread(direct, mesh.tritons["west-cheap"].endpoint,
                                       "generate-small", PROMPT, 12)
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 12,
                                [("x-ttft-ms", "5000"), ("x-tpot-ms", "1000")])
    assert s.code is grpc.StatusCode.OK, s.details
    assert s.tokens == expected
    t = s.trailers
    assert (t["x-tokens-in"], t["x-tokens-out"], t["x-resumed"]) == ("60", "12", "0")
    assert float(t["x-ttft-ms"]) > 0 and float(t["x-tpot-ms"]) > 0
    # the edge's TTFT starts after the caller's and ends before it: never longer (the
    # trailer is rounded to 0.1 ms)
    assert s.ttft_ms is not None and float(t["x-ttft-ms"]) <= s.ttft_ms + 0.05, (t, s.ttft_ms)
    assert float(t["x-cost-usd"]) > 0
    assert (t["x-ttft-met"], t["x-tpot-met"], t["x-slo-met"]) == ("true", "true", "true")
    assert t["x-served-by"].endswith("/generate-small")


async def test_missed_objective_is_reported(mesh: Mesh) -> None:
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 6,
                                [("x-tpot-ms", "0.001")])
    assert s.code is grpc.StatusCode.OK, s.details
    assert (s.trailers["x-tpot-met"], s.trailers["x-slo-met"]) == ("false", "false")
    assert float(s.trailers["x-tpot-ms"]) > 0.001  # what was measured, against the objective
    assert s.trailers["x-ttft-met"] == "true"  # not asked: met


@pytest.mark.parametrize(("metadata", "needle"), [
    ([("x-max-tokens", "1.5")], "whole number"),
    ([("x-ttft-ms", "100"), ("x-ttft-ms", "900")], "contradicts"),
    ([("x-tpot-ms", "-3")], "between"),
    ([("x-session-id", "a"), ("x-session-id", "b")], "contradicts"),
    ([("x-allow-variant-change", "maybe")], "true or false"),
])
async def test_bad_stream_hints_are_invalid_argument(mesh: Mesh, metadata: list[tuple[str, str]],
                                                     needle: str) -> None:
    """Every stream hint: a bad value ends the stream before any token, INVALID_ARGUMENT,
    and the status names the header and why."""
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 4, metadata)
    assert s.code is grpc.StatusCode.INVALID_ARGUMENT, (s.code, s.details)
    assert metadata[0][0] in s.details and needle in s.details, s.details
    assert s.tokens == []


async def test_tight_tpot_moves_streams_to_the_fast_deployment(mesh: Mesh) -> None:
    # Teach the edge both deployments' token speeds (each is tried once while unmeasured).
    for _ in range(4):
        await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 20, [])
    learned = mesh.edge.router.streams.estimates(
        mesh.edge.router.store.candidates["generate"])
    assert set(learned) == {"east-fast/generate-small", "west-cheap/generate-small",
                            "central-cheap/generate-small"}
    loose = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 8,
                                    [("x-tpot-ms", "1000")])
    tight = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 8,
                                    [("x-tpot-ms", "6")])
    assert loose.trailers["x-served-by"] != "east-fast/generate-small"  # cheaper per token
    assert tight.trailers["x-served-by"] == "east-fast/generate-small"

    # explain --stream asks the edge, which answers with the choice those streams got
    def explain(**ask: object) -> placement_pb2.ExplainResponse:
        with grpc.insecure_channel(mesh.edge_address) as ch:
            resp: placement_pb2.ExplainResponse = edge_pb2_grpc.EdgeAdminStub(ch).Explain(
                placement_pb2.ExplainRequest(model="generate", stream=placement_pb2.StreamAsk(
                    **ask)), timeout=5)  # type: ignore[arg-type]
            return resp

    ex = await asyncio.to_thread(explain, prompt_tokens=len(PROMPT), max_tokens=8, tpot_ms=6)
    assert ex.chosen_deployment_id == tight.trailers["x-served-by"]
    rows = {o.deployment_id: o for o in ex.stream_options}
    assert all(o.measured and o.learned_from in ("edge", "fleet") for o in rows.values())
    slow = rows["west-cheap/generate-small"]
    assert not slow.feasible and slow.reason.startswith("misses an objective: predicted TPOT")
    assert rows["east-fast/generate-small"].usd_per_1m_tokens > slow.usd_per_1m_tokens > 0
    ex = await asyncio.to_thread(explain, prompt_tokens=len(PROMPT), max_tokens=8,
                                 tpot_ms=1000)
    # the two cheap ones cost the same: which one is the placeholder prompt's hash order
    assert ex.chosen_deployment_id.endswith("-cheap/generate-small") and ex.slo_met
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(explain, prompt_tokens=0)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


async def test_a_fresh_edge_routes_its_first_stream_on_the_fleets_learning(mesh: Mesh) -> None:
    """What one edge learned reaches placement (ReportObservations), comes back on the route
    rows (Candidate.tokens), and a new edge that never ran a stream chooses by it."""
    for _ in range(4):  # the first edge measures all three deployments
        await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 20, [])

    def fleet_learned() -> bool:
        return all(c.tokens is not None for c in mesh.edge.router.store.candidates["generate"])

    await eventually(fleet_learned, 20, "placement publishes the token speeds on the rows")
    speeds = {c.deployment_id: c.tokens for c in mesh.edge.router.store.candidates["generate"]}
    cheap = speeds["west-cheap/generate-small"]
    assert cheap is not None and cheap.usd_per_1m_output > 0 and cheap.usd_per_1m_input > 0
    # ... and `switchyard status` shows it (placement's own route tables, as status reads them)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.placement.port}") as ch:
        tables = await placement_pb2_grpc.PlacementStub(ch).GetRouteTables(
            placement_pb2.GetRouteTablesRequest(), timeout=5)
    shown = "\n".join(token_section(t) for t in tables.tables if t.model == "generate")
    assert "west-cheap/generate-small" in shown and "$/1M output" in shown, shown
    edge = mesh.cfg.edges[0].model_copy(update={"id": "edge-fresh"})
    fresh = await start_edge(mesh.cfg, edge, port=0,
                             placement=[f"127.0.0.1:{mesh.placement.port}"], metrics_port=0)
    try:
        await eventually(lambda: fresh.router.store.candidates.get("generate"), 10)
        cands = fresh.router.store.candidates["generate"]
        assert {src for _, src in fresh.router.streams.sourced(cands).values()} == {"fleet"}
        # A TPOT objective only the fleet's fastest deployment(s) meet, as the fresh edge's
        # own rows say (measured on this host: a loaded host decodes slower than emulated)
        fleet = {c.deployment_id: c.tokens for c in cands if c.tokens is not None}
        goal = min(t.tpot_base_ms for t in fleet.values())
        tight = await asyncio.to_thread(run_stream, f"127.0.0.1:{fresh.port}", PROMPT, 8,
                                        [("x-tpot-ms", repr(goal))])
        loose = await asyncio.to_thread(run_stream, f"127.0.0.1:{fresh.port}", PROMPT, 8,
                                        [("x-tpot-ms", "1000")])
    finally:
        await fresh.stop(0.5)
    # without the fleet's learning each deployment would first be tried once, unmeasured
    # (predicted optimistically, so any could take it)
    assert fleet[tight.trailers["x-served-by"]].tpot_base_ms <= goal, (tight.trailers, fleet)
    assert loose.trailers["x-served-by"] != "east-fast/generate-small"
    # Whether this one stream met the objective is this host's scheduling: the trailer must
    # say what was measured, not that a loaded host kept up.
    met = float(tight.trailers["x-tpot-ms"]) <= goal
    assert tight.trailers["x-slo-met"] == ("true" if met else "false"), tight.trailers


async def test_demo_streaming_section_switchyard_vs_fastest(
        mesh: Mesh, plans: PlanLog, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's streaming section on this mesh: interactive streams (TPOT ≤ 3.5 ms) need
    east-fast in both runs; batch streams go to a cheap deployment under Switchyard unless the
    edge predicted, when it chose, that none would meet their objectives (a loaded host slows
    every emulated speed), and to the lowest predicted TTFT + n × TPOT under the fastest
    profile; Switchyard's $ per 1M tokens is lower by the streams the fastest profile put on
    east-fast and it did not. Routing is judged on the edge's own plans (``plans``), recorded
    as it made them, not on what a quiet host would show."""
    cfg = mesh.cfg.model_copy(update={"edges": [
        mesh.cfg.edges[0].model_copy(update={"port": mesh.edge.port})]})
    results = await asyncio.to_thread(demo_streams.run_stream_demo, cfg, 8)
    printed = capsys.readouterr().out
    assert "EMULATED" in printed and "$/1M tokens" in printed and "TOTAL" in printed
    sw, fastest = results["Switchyard"], results["fastest"]
    asked = {c: n for c, _, _, n in demo_streams.CLASSES}
    assert all(o.ok and o.tokens == asked[o.cls] for o in sw + fastest)
    fast = "east-fast/generate-small"
    cheap = ("west-cheap/generate-small", "central-cheap/generate-small")
    # A batch stream starts on a cheap deployment unless, as the edge predicted when it chose,
    # no cheap one would meet its objectives: the demo LLM's speed is a sleep, so a loaded host
    # slows every deployment's learned TPOT, and a cheap one's past 25 ms makes east-fast the
    # right choice. Judged on the edge's own plan of each stream (its predictions then), not
    # on this host's speed. One whose pace would miss its 25 ms per token moves once
    # (placement/stream_move.py) and may end on east-fast.
    prompts = demo_prompts(len(sw))
    for o, prompt in zip(sw, prompts, strict=True):
        started = plans.starts(prompt, fastest=False)
        assert started, f"no plan of the {o.cls} stream with this prompt: {prompt[:4]}…"
        if not o.resumed:  # served where the edge's last plan of it put it
            assert o.deployment == started[-1].chosen, (o, started[-1].said())
        for p in started:
            if o.cls == "batch":
                assert p.chosen in cheap or not any(c.feasible for c in p.options(cheap)), (
                    "a batch stream started on east-fast while a cheap deployment was "
                    f"predicted to meet its objectives: {p.said()}")
            elif p.chosen != fast:  # only east-fast decodes at 3.5 ms: elsewhere only as
                # the best effort, within FALLBACK_BAND of the fastest predicted TPOT and sum
                assert not any(c.feasible for c in p.choice.options) and best_effort(
                    p, asked[o.cls]), f"an interactive stream started off east-fast: {p.said()}"
    assert all(o.resumed <= 1 for o in sw + fastest)
    # fastest: the lowest predicted TTFT + n × TPOT, which load on east-fast can tip elsewhere
    # (on a loaded host its learned per-stream slowdown can send every batch stream to a
    # cheap one): each of its streams where that rule put it on the edge's own predictions
    for o, prompt in zip(fastest, prompts, strict=True):
        started = plans.starts(prompt, fastest=True)
        assert started, f"no fastest plan of the {o.cls} stream with this prompt"
        if not o.resumed:
            assert o.deployment == started[-1].chosen, (o, started[-1].said())
        for p in started:
            best = min(p.choice.options, key=lambda c: (
                c.ttft_ms + asked[o.cls] * c.tpot_ms, c.cost_usd))
            assert p.chosen == best.candidate.deployment_id, p.said()
    # interactive streams on east-fast (judged above on their plans: elsewhere only when no
    # deployment was predicted to meet 3.5 ms, when a loaded east-fast's predicted TPOT can be
    # within the best effort's 10 % of a cheap one's); one that moved, moved there: a move
    # goes only where its pace is predicted to meet the objective
    assert {o.deployment for o in sw if o.cls == "interactive" and o.resumed} <= {fast}
    # The demo's measured $ per 1M tokens is GPU time on this host, which a starved host
    # stretches unevenly: it is printed, not compared. What the mesh guarantees is the price
    # of where it routed: each stream at its deployment's pushed $/s for its emulated GPU time,
    # where a stream on east-fast costs more than on a cheap one. Switchyard is cheaper by as
    # many streams as the fastest profile put on east-fast and it did not; when the fastest
    # profile's predictions sent batch streams to cheap deployments too (a loaded host), the
    # two runs may cost the same.
    nominal = nominal_usd(mesh)
    one = {(c, d): nominal(demo_streams.StreamOutcome(c, d, True, n, demo_streams.PROMPT_TOKENS,
                                                      0.0, 0.0, 0.0, True, 0))
           for c, _, _, n in demo_streams.CLASSES for d in (fast, *cheap)}
    assert all(one[c, fast] > one[c, d] for c, d in one if d != fast), one
    on_fast = {run: collections.Counter(o.cls for o in v if o.deployment == fast)
               for run, v in results.items()}
    if on_fast["Switchyard"] < on_fast["fastest"]:  # fewer in every class, in one strictly
        assert nominal_per_1m(sw, nominal) < nominal_per_1m(fastest, nominal), on_fast
    sw_cost = demo_streams.usd_per_1m_tokens(sw)
    base_cost = demo_streams.usd_per_1m_tokens(fastest)
    assert sw_cost is not None and base_cost is not None and sw_cost > 0 and base_cost > 0
    assert f"${sw_cost:.2f} per 1M tokens vs ${base_cost:.2f} always-fastest (" in printed


def best_effort(p: Planned, tokens: int) -> bool:
    """The plan's choice is within ``FALLBACK_BAND`` of its fastest option (the lowest predicted
    TTFT + n × TPOT), in that sum and in TPOT: the best effort when nothing is feasible."""
    def total(o: StreamOption) -> float:
        return o.ttft_ms + o.margin_ms + tokens * o.tpot_ms

    first = min(p.choice.options, key=total)
    c, band = p.choice.chosen, 1.0 + FALLBACK_BAND
    return total(c) <= total(first) * band and c.tpot_ms <= first.tpot_ms * band


def demo_prompts(n: int, seed: int = 11) -> list[tuple[int, ...]]:
    """The prompts of ``demo_streams.run_streams``' ``n`` streams, in its order (its default
    seed): a stream's outcome is matched to the edge's plan of it by its prompt."""
    rng = random.Random(seed)
    return [tuple(rng.randrange(1, 30_000) for _ in range(demo_streams.PROMPT_TOKENS))
            for _ in range(n)]


def nominal_usd(mesh: Mesh) -> Callable[[demo_streams.StreamOutcome], float]:
    """A stream's cost at its deployment's price per second (from the route rows placement
    pushed: cost per call over compute per call) for the GPU time the demo LLM emulates for
    its tokens on that backend alone (``llm_parameters``: prefill and decode ms per token,
    already divided by the backend's speed)."""
    rows = {c.deployment_id: c for c in mesh.edge.router.store.candidates["generate"]}

    def usd(o: demo_streams.StreamOutcome) -> float:
        ms = emulated_ms(mesh.cfg, o.deployment)
        gpu_ms = (cold_prefill_ms(ms, o.tokens_in)
                  + max(o.tokens - 1, 0) * ms["llm_decode_ms_per_token"])
        return usd_per_second(rows[o.deployment]) * gpu_ms / 1000

    return usd


def nominal_per_1m(outcomes: list[demo_streams.StreamOutcome],
                   usd: Callable[[demo_streams.StreamOutcome], float]) -> float:
    tokens = sum(o.tokens + o.tokens_in for o in outcomes)
    return sum(usd(o) for o in outcomes) / tokens * 1e6


async def test_a_session_returns_to_its_prefix_holder_and_prefills_faster(mesh: Mesh) -> None:
    for _ in range(4):  # every deployment measured (each is tried once while unmeasured)
        await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 6, [])
    history = [50_000 + k for k in range(2000)]  # ~500 ms of emulated prefill, cold
    first = await asyncio.to_thread(run_stream, mesh.edge_address, history, 4,
                                    [("x-session-id", "conv-1")])
    turn = [*history, *first.tokens, 7, 8, 9]
    second = await asyncio.to_thread(run_stream, mesh.edge_address, turn, 4,
                                     [("x-session-id", "conv-1")])
    assert first.code is grpc.StatusCode.OK and second.code is grpc.StatusCode.OK
    holder = first.trailers["x-served-by"]
    assert holder.endswith("-cheap/generate-small")
    assert second.trailers["x-served-by"] == holder
    # The emulated prefill is a sleep, so a load can only lengthen it: the first turn took at
    # least its cold prefill, and the second, faster than its own (longer) prompt's cold
    # prefill, can only have been served from the prefix cache.
    ms = emulated_ms(mesh.cfg, holder)
    assert float(first.trailers["x-ttft-ms"]) >= cold_prefill_ms(ms, len(history)), (
        first.trailers)
    assert float(second.trailers["x-ttft-ms"]) < cold_prefill_ms(ms, len(turn)), (
        first.trailers, second.trailers)


async def resumed_elsewhere(mesh: Mesh, on_token: Callable[[int, Stream], None],
                            broken: list[str]) -> None:
    """A 200-token stream whose backend ``on_token`` breaks (appending it to ``broken``) is
    whole: every token once, in order, resumed on another backend."""
    expected = await asyncio.to_thread(direct, mesh.tritons["east-fast"].endpoint,
                                       "generate-small", PROMPT, 200)
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 200, [], on_token)
    assert s.code is grpc.StatusCode.OK, s.details
    assert len(s.tokens) == 200 and s.tokens == expected  # none missing, none repeated
    assert s.trailers["x-resumed"] == "1"
    assert s.trailers["x-tokens-out"] == "200"
    assert broken and not s.trailers["x-served-by"].startswith(broken[0])


async def test_stream_resumes_after_its_backend_is_killed(mesh: Mesh, killed: list[str]
                                                          ) -> None:
    await resumed_elsewhere(mesh, kill_when(30, mesh, killed), killed)


async def test_a_stream_whose_backend_stops_answering_resumes_elsewhere(
        mesh: Mesh, stopped: list[str]) -> None:
    """The backend serving a stream stops (SIGSTOP) at its 30th token: its connection stays
    open and it answers nothing, so the stream waited for the caller's deadline (before:
    DEADLINE_EXCEEDED after the caller's 30 s, 31 tokens delivered). The edge's health checks
    find it unreachable; the silent attempt is given up and the stream resumes elsewhere."""
    await resumed_elsewhere(mesh, stop_when(30, mesh, stopped), stopped)
    assert mesh.edge.router.stalls.aborted == 1


async def test_a_stream_whose_backend_slows_down_moves_with_no_token_lost(
        mesh: Mesh, slowed: list[str]) -> None:
    """The backend serving a stream decodes 20x slower (emulated) from its 10th token: the
    edge's watch of the stream's pace predicts a miss of x-tpot-ms, cancels the call and
    resumes the generation on another deployment (prompt + tokens delivered); the caller sees
    one stream, every token once and in order, and the trailers say it moved and why."""
    for _ in range(4):  # every deployment measured (each is tried once while unmeasured)
        await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 20, [])
    expected = await asyncio.to_thread(direct, mesh.tritons["west-cheap"].endpoint,
                                       "generate-small", PROMPT, 150)
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 150,
                                [("x-tpot-ms", "40")], slow_when(10, mesh, slowed, 20.0))
    assert s.code is grpc.StatusCode.OK, s.details
    assert slowed, "the serving backend was never slowed"
    assert s.tokens == expected  # none missing, none repeated, same order
    t = s.trailers
    assert (t["x-resumed"], t["x-resumed-reason"], t["x-tokens-out"]) == ("1", "slow", "150")
    assert not t["x-served-by"].startswith(f"{slowed[0]}/"), t
    # whether the moved stream met 40 ms is this host's scheduling; the trailer says what
    # was measured
    met = float(t["x-tpot-ms"]) <= 40
    assert t["x-tpot-met"] == ("true" if met else "false"), t


async def test_no_stream_is_lost_when_a_backend_is_killed_under_load(
        mesh: Mesh, killed: list[str]) -> None:
    """The kill drill (services/drills/streams.py) on this mesh: 8 concurrent resumable
    streams, SIGKILL of the backend serving most of them mid-generation; none lost, no
    token missing, duplicated or out of order (against the variant's fault-free tokens)."""
    def kill(backend: str) -> None:
        killed.append(backend)
        mesh.tritons[backend].kill()

    def reference(variant: str, prompt: list[int], n: int, avoid: str) -> list[int]:
        other = next(b for b in mesh.tritons if b != avoid)
        return direct(mesh.tritons[other].endpoint, variant, prompt, n)

    r = await asyncio.to_thread(run_stream_drill, mesh.edge_address, "generate", kill,
                                reference, streams=8, max_tokens=120, kill_after=20)
    print(r.table())
    assert r.passed, r.table()
    assert (r.lost, r.missing_tokens, r.duplicated_tokens, r.reordered) == (0, 0, 0, 0)
    assert killed == [r.killed] and r.on_killed >= 1 and r.resumed >= r.on_killed


async def test_a_stream_that_cannot_resume_ends_with_the_backends_status(
        mesh: Mesh, killed: list[str]) -> None:
    """Two requests on one stream: a resumed request could not say which tokens were whose,
    so the edge does not move it; the caller gets the failure, as before resumption."""
    def two_requests() -> Stream:
        out = Stream()
        reqs = [llm_request("generate", PROMPT, 200), llm_request("generate", PROMPT[:9], 200)]
        on_token = kill_when(30, mesh, killed)
        with grpc.insecure_channel(mesh.edge_address) as ch:
            call = ch.stream_stream(STREAM)(iter(reqs), timeout=30)
            try:
                for resp in call:
                    out.initial = out.initial or dict(call.initial_metadata())
                    out.tokens.append(parse_token(resp) or 0)
                    on_token(len(out.tokens), out)
            except grpc.RpcError:
                pass
            out.code, out.details = call.code(), call.details() or ""
            out.trailers = dict(call.trailing_metadata() or ())
        return out

    s = await asyncio.to_thread(two_requests)
    assert killed, "the backend was never killed"
    assert s.code is grpc.StatusCode.UNAVAILABLE, (s.code, s.details)
    assert "stream failed" in s.details and killed[0] in s.details
    assert s.trailers["x-resumed"] == "0" and 30 <= len(s.tokens) < 400


async def test_a_streams_cost_cap_holds_on_what_its_tokens_cost(mesh: Mesh) -> None:
    """``x-max-cost-usd`` on a stream is held on the stream's cost by tokens, not on the
    deployment's per-call estimate: under the cost a stream of 40 tokens really had, the
    stream is either refused before it starts (every deployment predicted over the cap) or
    stopped before the response that would take it over (a deployment not yet measured
    predicts nothing): never served over it. A cap it fits in changes nothing. A cap of half
    or a fifth of that cost may still be served whole by a cheaper deployment (a stream's
    cost is its price × the compute this loaded host measured): then within the cap."""
    full = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 40, [])
    assert full.code is grpc.StatusCode.OK, full.details
    cost = float(full.trailers["x-cost-usd"])
    assert cost > 0 and len(full.tokens) == 40
    for cap in (cost / 2, cost / 5):
        s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 40,
                                    [("x-max-cost-usd", f"{cap:.12f}")])
        if s.code is grpc.StatusCode.OK:  # a cheaper deployment served it whole
            assert float(s.trailers["x-cost-usd"]) <= cap, (cap, s.trailers)
            assert s.tokens == full.tokens
            continue
        assert s.code in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                          grpc.StatusCode.FAILED_PRECONDITION), (cap, s.code, s.trailers)
        assert "x-max-cost-usd" in s.details, s.details
        assert len(s.tokens) < 40 and s.tokens == full.tokens[:len(s.tokens)]
        if s.code is grpc.StatusCode.RESOURCE_EXHAUSTED:  # stopped at the cap
            assert float(s.trailers["x-cost-usd"]) <= cap, (cap, s.trailers)
            assert s.trailers["x-tokens-out"] == str(len(s.tokens))
        else:  # refused before it started
            assert s.tokens == []
    roomy = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 40,
                                    [("x-max-cost-usd", f"{cost * 100:.12f}")])
    assert roomy.code is grpc.StatusCode.OK, roomy.details
    assert roomy.tokens == full.tokens and float(roomy.trailers["x-cost-usd"]) <= cost * 100
