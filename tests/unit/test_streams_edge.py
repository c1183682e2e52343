"""The edge's stream pieces without gRPC: stream hints, the LLM wire helpers, the meter's
trailers, what StreamStats learns, and the attempt policy's resumption rule."""

from __future__ import annotations

import dataclasses

import pytest
from tritonclient.grpc import service_pb2

from placement.attempts import AttemptPolicy, AttemptSettings, CallAttempts
from placement.errors import CostCapReached, InvalidHint, PolicyUnsatisfiable
from placement.model import CallContext, Candidate, Hints
from services.edge.generation import Generation
from services.edge.hints import StreamHints, parse_stream
from services.edge.token_stats import StreamMeter, StreamStats, usd_per_second
from services.edge.tokens import (
    llm_request,
    parse_request,
    parse_token,
    resume_request,
)


def cand(name: str = "a", rtt: float = 0.0) -> Candidate:
    return Candidate(deployment_id=f"{name}/llm", backend_id=name, endpoint="h:1", variant="llm",
                     region="r", cloud="c", accelerator="gpu", quality=0.8, latency_p95_ms=10,
                     rtt_ms=rtt, queue_ms=0, compute_ms=2.0, cost_usd=2e-6, spare_capacity=1)


# -- hints --------------------------------------------------------------------------------

def test_stream_hints_are_read() -> None:
    h = parse_stream([("x-ttft-ms", "250"), ("x-tpot-ms", "20"), ("x-max-tokens", "128"),
                      ("x-session-id", "chat-7"), ("x-allow-variant-change", "true"),
                      ("x-slo-ms", "9")])
    assert h == StreamHints(250.0, 20.0, 128, "chat-7", True)
    assert parse_stream(None) == StreamHints()
    assert parse_stream([("x-ttft-ms", "250"), ("x-ttft-ms", "250.0")]).ttft_ms == 250.0


@pytest.mark.parametrize(("metadata", "needle"), [
    ([("x-ttft-ms", "soon")], "not a number"),
    ([("x-tpot-ms", "0")], "between"),
    ([("x-max-tokens", "2.5")], "whole number"),
    ([("x-max-tokens", "0")], "between"),
    ([("x-tpot-ms", "20"), ("x-tpot-ms", "200")], "contradicts"),
    ([("x-session-id", "a"), ("x-session-id", "b")], "contradicts"),
    ([("x-allow-variant-change", "perhaps")], "true or false"),
])
def test_bad_stream_hints_name_the_header(metadata: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(InvalidHint) as err:
        parse_stream(metadata)
    assert needle in err.value.message and err.value.header == metadata[0][0]
    assert err.value.grpc_code == "INVALID_ARGUMENT"


# -- wire ---------------------------------------------------------------------------------

def test_request_round_trip_and_resume_request() -> None:
    raw = llm_request("chat", [1, 2, 3], 10, request_id="r1")
    llm = parse_request(raw)
    assert llm is not None and llm.prompt == (1, 2, 3) and llm.max_tokens == 10
    resumed = parse_request(resume_request(llm, [7, 8], "chat", owed=8))
    assert resumed is not None
    assert resumed.prompt == (1, 2, 3, 7, 8) and resumed.max_tokens == 8
    assert resumed.message.id == "r1" and resumed.message.model_name == "chat"
    shapes = {i.name: list(i.shape) for i in resumed.message.inputs}
    assert shapes == {"PROMPT": [1, 5], "MAX_TOKENS": [1, 1]}


def test_resume_adds_max_tokens_when_the_caller_left_it_out() -> None:
    llm = parse_request(llm_request("chat", [4], None))
    assert llm is not None and llm.max_tokens is None
    resumed = parse_request(resume_request(llm, [9], "chat", owed=5))
    assert resumed is not None and resumed.max_tokens == 5 and resumed.prompt == (4, 9)


def test_text_prompts_are_bytes_and_resume_as_token_ids() -> None:
    llm = parse_request(llm_request("chat", "hé", 4))
    assert llm is not None and llm.prompt == tuple("hé".encode())
    resumed = parse_request(resume_request(llm, [5], "chat", owed=3))
    assert resumed is not None and resumed.prompt == (*"hé".encode(), 5)
    assert [i.name for i in resumed.message.inputs] == ["MAX_TOKENS", "PROMPT"]
    assert len(resumed.message.raw_input_contents) == 2


def test_requests_without_a_prompt_are_not_llm_requests() -> None:
    req = service_pb2.ModelInferRequest(model_name="summarize")
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(b"\0" * 16)
    assert parse_request(req.SerializeToString()) is None
    assert parse_request(b"\xff\xff\xff") is None


def test_tokens_are_read_from_responses() -> None:
    resp = service_pb2.ModelStreamInferResponse()
    resp.infer_response.outputs.add(name="TOKEN", datatype="INT32", shape=[1, 1])
    resp.infer_response.raw_output_contents.append((31337).to_bytes(4, "little"))
    assert parse_token(resp.SerializeToString()) == 31337
    err = service_pb2.ModelStreamInferResponse(error_message="boom")
    assert parse_token(err.SerializeToString()) is None
    assert parse_token(service_pb2.ModelStreamInferResponse().SerializeToString()) is None


# -- meter and learning -------------------------------------------------------------------

def test_meter_trailers_report_tokens_time_cost_and_objectives() -> None:
    m = StreamMeter(start=10.0, tokens_in=100, measured=True)
    m.segment(10.0, load=1)
    for i in range(5):  # first token after 200 ms, then one every 20 ms
        m.token(10.2 + 0.02 * i)
    stats = StreamStats()
    m.segment_ended(cand(), stats, prompt_tokens=100, cached_tokens=0)
    t = dict(m.trailers(ttft_goal=250, tpot_goal=10, served=True))
    assert (t["x-tokens-in"], t["x-tokens-out"], t["x-resumed"]) == ("100", "5", "0")
    assert float(t["x-ttft-ms"]) == pytest.approx(200.0)
    assert float(t["x-tpot-ms"]) == pytest.approx(20.0)
    # $1e-3/s × (200 ms prefill + 80 ms decode shared by 2 streams) = $2.4e-4
    assert float(t["x-cost-usd"]) == pytest.approx(1e-3 * 0.24)
    assert (t["x-ttft-met"], t["x-tpot-met"], t["x-slo-met"]) == ("true", "false", "false")
    failed = dict(m.trailers(250, 10, served=False))
    assert "x-cost-usd" not in failed and failed["x-tokens-out"] == "5"
    assert "x-slo-met" not in dict(m.trailers(None, None, served=True))
    assert "x-resumed-reason" not in t
    m.resumed, m.reasons = 2, ["failed", "slow"]
    t = dict(m.trailers(250, 10, served=True))
    assert (t["x-resumed"], t["x-resumed-reason"]) == ("2", "failed,slow")


def test_stats_learn_prefill_and_tpot_under_load() -> None:
    stats = StreamStats()
    c = cand()
    assert stats.estimates([c]) == {}
    for load, tpot in [(0, 10.0), (1, 12.0), (2, 14.0), (3, 16.0)] * 3:
        stats.observe(c.deployment_id, prefill_ms=50.0, uncached_tokens=100, tpot_ms=tpot,
                      load=load)
    est = stats.estimates([c])[c.deployment_id]
    assert est.prefill_ms_per_token == pytest.approx(0.5)
    assert est.tpot_base_ms == pytest.approx(10.0)
    assert est.tpot_per_stream_ms == pytest.approx(2.0)
    assert est.usd_per_second == pytest.approx(usd_per_second(c)) == pytest.approx(1e-3)


def test_sessions_remember_their_holder_boundedly() -> None:
    stats = StreamStats(max_sessions=2)
    stats.remember("s1", "a/llm", 100)
    stats.remember("s2", "b/llm", 50)
    stats.remember("s3", "a/llm", 10)
    assert stats.holder("s1") == ("", 0)
    assert stats.holder("s2") == ("b/llm", 50) and stats.holder("") == ("", 0)


def test_loads_count_streams_in_flight() -> None:
    stats = StreamStats()
    assert stats.started("a") == 0 and stats.started("a") == 1
    stats.ended("a")
    assert stats.inflight == {"a": 1}


# -- the attempt policy -------------------------------------------------------------------

def test_a_committed_stream_moves_only_when_it_may_resume() -> None:
    policy = AttemptPolicy(AttemptSettings(max_attempts=3))
    a, b = cand("a"), cand("b")
    plain = policy.start(None)
    plain.started(a)
    plain.commit()
    v = plain.failed(a, "UNAVAILABLE", [a, b], 0.0, lambda: True)
    assert not v.retry and "cannot move" in v.reason
    resumable = policy.start(None)
    resumable.started(a)
    resumable.commit()
    resumable.may_resume()
    v = resumable.failed(a, "UNAVAILABLE", [a, b], 0.0, lambda: True)
    assert v.retry and a.deployment_id in resumable.exclude
    # The backend's own answer is still passed through, resumable or not.
    assert not resumable.failed(b, "INVALID_ARGUMENT", [a, b], 0.0, lambda: True).retry


# -- a stream's token side (services/edge/generation.py), declarations already known ------

class _Router:
    """What Generation reads of the router when every declaration is already cached."""

    def __init__(self) -> None:
        self.streams = StreamStats()
        self.clock = lambda: 0.0


def _generation(router: _Router, max_tokens: int | None = 10, allow: bool = False
                ) -> Generation:
    llm = parse_request(llm_request("chat", [1, 2, 3], max_tokens))
    return Generation(router, llm, StreamHints(allow_variant_change=allow),  # type: ignore[arg-type]
                      StreamMeter(0.0, 0))


def _committed() -> CallAttempts:
    tries = AttemptPolicy(AttemptSettings()).start(None)
    tries.started(cand("a"))
    tries.commit()
    return tries


async def test_owed_tokens_when_the_variant_declares_resumption() -> None:
    router = _Router()
    router.streams.declare("llm", True, 6)
    gen = _generation(router)
    gen.delivered[:] = [9, 9, 9, 9]
    tries = _committed()
    assert await gen.owed(tries, 1, cand("a"), [cand("a"), cand("b")]) == 6
    assert tries.resumable
    gen_default = _generation(router, max_tokens=None)  # the model's default: 6 tokens
    gen_default.delivered[:] = [9, 9]
    assert await gen_default.owed(_committed(), 1, cand("a"), [cand("a")]) == 4


async def test_a_finished_generation_owes_nothing_and_is_not_retried() -> None:
    router = _Router()
    router.streams.declare("llm", True, 6)
    gen = _generation(router, max_tokens=3)
    gen.delivered[:] = [7, 8, 9]
    tries = _committed()
    assert await gen.owed(tries, 1, cand("a"), [cand("a"), cand("b")]) == 0
    assert not tries.resumable


async def test_no_resumption_without_declaration_commit_or_with_several_requests() -> None:
    router = _Router()
    router.streams.declare("llm", False, 6)
    gen = _generation(router)
    assert await gen.owed(_committed(), 1, cand("a"), [cand("a"), cand("b")]) is None
    router.streams.declare("llm", True, 6)
    assert await gen.owed(_committed(), 2, cand("a"), [cand("a")]) is None
    fresh = AttemptPolicy(AttemptSettings()).start(None)
    assert await gen.owed(fresh, 1, cand("a"), [cand("a")]) is None


def _variant(name: str, variant: str) -> Candidate:
    return dataclasses.replace(cand(name), deployment_id=f"{name}/{variant}", variant=variant)


async def test_resume_keeps_the_variant_unless_a_declared_change_is_allowed() -> None:
    router = _Router()
    router.streams.declare("llm", True, 6)
    router.streams.declare("alt", True, 6)
    router.streams.declare("old", False, 6)
    cands = [_variant("a", "llm"), _variant("b", "llm"), _variant("c", "alt"),
             _variant("d", "old")]
    request, refused = await _generation(router).resume("chat", cands[0], cands, owed=5)
    assert refused == {"c/alt", "d/old"}
    resumed = parse_request(request)
    assert resumed is not None and resumed.max_tokens == 5
    _, refused = await _generation(router, allow=True).resume("chat", cands[0], cands, owed=5)
    assert refused == {"d/old"}


def _token(t: int) -> bytes:
    resp = service_pb2.ModelStreamInferResponse()
    resp.infer_response.outputs.add(name="TOKEN", datatype="INT32", shape=[1, 1])
    resp.infer_response.raw_output_contents.append(t.to_bytes(4, "little"))
    return resp.SerializeToString()


def test_a_prompt_waits_as_pending_prefill_until_its_first_token() -> None:
    router = _Router()
    g, other = _generation(router), _generation(router)
    g.attempt_started(cand("a"))
    other.attempt_started(cand("a"))
    assert router.streams.pending["a/llm"] == 6  # two 3-token prompts wait on a
    g.response(_token(7))
    assert router.streams.pending["a/llm"] == 3  # g's first token: only other's waits
    g.response(_token(8))
    assert router.streams.pending["a/llm"] == 3
    other.attempt_ended(cand("a"))  # failed before a token: its prompt no longer waits
    assert router.streams.pending["a/llm"] == 0
    g.attempt_ended(cand("a"))
    assert router.streams.pending["a/llm"] == 0 and router.streams.inflight["a/llm"] == 0


ANY = CallContext(Hints(slo_ms=1000.0))  # a call that asks nothing else


class _AnyProfile:
    """A profile without filters (``Generation.plan`` reads only these)."""

    name = "default"
    hard_filters: tuple[()] = ()
    filters: tuple[()] = ()


def test_a_stream_that_will_miss_its_tpot_moves_once_to_one_predicted_to_meet_it() -> None:
    """Tokens every 20 ms on a (cheap), then every 100 ms against x-tpot-ms 30: after the
    hysteresis, ``moving`` hands back the request that resumes the generation (prompt +
    delivered, the tokens owed) and the next choice is b; never a second move."""
    router, now = _Router(), [0.0]
    router.clock = lambda: now[0]
    s = router.streams
    s.declare("llm", True, 60)
    for dep, tpot in (("a/llm", 20.0), ("b/llm", 10.0)):
        for _ in range(3):
            s.observe(dep, prefill_ms=10.0, uncached_tokens=3, tpot_ms=tpot, load=0)
    a, b = cand("a"), dataclasses.replace(cand("b"), cost_usd=2e-5)  # b: 10x the $/s
    llm = parse_request(llm_request("chat", [1, 2, 3], 60))
    gen = Generation(router, llm, StreamHints(tpot_ms=30.0),  # type: ignore[arg-type]
                     StreamMeter(0.0, 3, measured=True))
    assert gen.choose(_AnyProfile(), [a, b], ANY)[0] is a  # type: ignore[arg-type]
    gen.attempt_started(a)
    moved, gaps = None, [0.02] * 12 + [0.1] * 20
    for k, gap in enumerate(gaps):
        now[0] += gap
        gen.response(_token(k))
        moved = gen.moving(a, "chat", 1)
        if moved is not None:
            break
    assert moved is not None and 12 + 4 < len(gen.delivered) < 12 + 10  # after the hysteresis
    resumed = parse_request(moved)
    n = len(gen.delivered)
    assert resumed is not None and resumed.prompt == (1, 2, 3, *range(n))
    assert resumed.max_tokens == 60 - n
    assert gen.meter.reasons == ["slow"]
    gen.attempt_ended(a)
    assert gen.choose(_AnyProfile(), [a, b], ANY)[0] is b  # type: ignore[arg-type]
    gen.attempt_started(b)
    for k in range(n, n + 20):  # b is slow too: no second move
        now[0] += 0.1
        gen.response(_token(k))
        assert gen.moving(b, "chat", 1) is None


def test_no_move_for_a_stream_of_several_requests_or_an_undeclared_variant() -> None:
    router, now = _Router(), [0.0]
    router.clock = lambda: now[0]
    for dep in ("a/llm", "b/llm"):
        router.streams.observe(dep, prefill_ms=1.0, uncached_tokens=3, tpot_ms=5.0, load=0)
    a, b = cand("a"), cand("b")
    gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], 60)),
                     StreamHints(tpot_ms=30.0), StreamMeter(0.0, 3))  # type: ignore[arg-type]
    gen.choose(_AnyProfile(), [a, b], ANY)  # type: ignore[arg-type]
    gen.attempt_started(a)
    for k in range(30):
        now[0] += 0.2
        gen.response(_token(k))
        assert gen.moving(a, "chat", 2) is None  # two requests: cannot say whose tokens
        assert gen.moving(a, "chat", 1) is None  # the variant never declared resumption


@pytest.mark.parametrize(("tpot_ms", "goal", "met"), [
    (3.504, 3.5, "true"),    # reported 3.50: met, as the caller reads it
    (3.506, 3.5, "false"),   # reported 3.51
    (3.4869, 3.4871, "false"),  # reported 3.49, above the objective
])
def test_the_objective_is_judged_on_the_value_the_trailer_reports(
        tpot_ms: float, goal: float, met: str) -> None:
    m = StreamMeter(start=0.0, tokens_in=4)
    m.segment(0.0, 0)
    m.token(0.1)
    m.token(0.1 + 10 * tpot_ms / 1000)  # two tokens: one gap of 10 × tpot
    m.tokens_out = 11  # ... counted as ten gaps of tpot_ms
    got = dict(m.trailers(None, goal, served=True))
    assert float(got["x-tpot-ms"]) == round(tpot_ms, 2)
    assert got["x-tpot-met"] == got["x-slo-met"] == met


# -- x-max-cost-usd on a stream: held on what its tokens cost ------------------------------

def test_a_stream_ends_before_the_response_that_would_take_it_over_its_cost_cap() -> None:
    """A deployment not yet measured predicts nothing, so the choice cannot keep a cap; the
    stream's cost by tokens (what ``x-cost-usd`` reports) does: the response that would take
    it over the cap is neither counted nor sent, and the cost reported stays within it."""
    router, now = _Router(), [0.0]
    router.clock = lambda: now[0]
    a = cand("a")  # 1e-3 $/s: 20 ms of prefill = $2e-5, 10 ms per token = $1e-5
    cap = 6.5e-5  # prefill + 4 tokens' decode = $6e-5; a 5th token would be $7e-5
    gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], 60)),  # type: ignore[arg-type]
                     StreamHints(), StreamMeter(0.0, 3, measured=True))
    assert gen.choose(_AnyProfile(), [a], CallContext(Hints(1000.0, max_cost_usd=cap)))[0] is a
    gen.attempt_started(a)
    now[0] = 0.02

    def stream() -> None:
        for k in range(60):
            gen.response(_token(k))
            now[0] += 0.01

    with pytest.raises(CostCapReached) as err:
        stream()
    assert len(gen.delivered) == 5  # the first token, then 4 more; not the 6th
    assert err.value.grpc_code == "RESOURCE_EXHAUSTED" and "x-max-cost-usd" in err.value.message
    gen.attempt_ended(a)
    trailers = dict(gen.meter.trailers(None, None, served=False))
    assert float(trailers["x-cost-usd"]) <= cap
    assert float(trailers["x-cost-usd"]) == pytest.approx(6e-5)
    assert trailers["x-tokens-out"] == "5"


def test_the_cost_reported_at_a_cap_is_the_cost_the_cap_was_judged_on() -> None:
    """A clock that moves between two readings (a loaded host) must not bill the last token
    later than the cap was judged: one reading per response. Over caps swept across the
    stream's cost, the reported ``x-cost-usd`` is never over the cap (it was, by one clock
    step of decode, when the response was timed by a second reading: CI, 1.89236e-05 against
    a cap of 1.89209e-05)."""
    over: list[tuple[float, float]] = []
    for i in range(200):
        cap = 2.5e-5 + i * 2.5e-7
        router, now = _Router(), [0.0]

        def tick(now: list[float] = now) -> float:
            now[0] += 0.0007  # every reading of the clock is 0.7 ms later
            return now[0]

        router.clock = tick  # type: ignore[method-assign,assignment]
        a = cand("a")
        gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], 60)),  # type: ignore[arg-type]
                         StreamHints(), StreamMeter(0.0, 3, measured=True))
        gen.choose(_AnyProfile(), [a], CallContext(Hints(1000.0, max_cost_usd=cap)))
        gen.attempt_started(a)

        def stream(gen: Generation = gen, now: list[float] = now) -> None:
            for k in range(60):
                now[0] += 0.01
                gen.response(_token(k))

        with pytest.raises(CostCapReached):
            stream()
        gen.attempt_ended(a)
        reported = float(dict(gen.meter.trailers(None, None, served=False))["x-cost-usd"])
        if reported > cap:
            over.append((cap, reported))
    assert over == []


def test_without_a_cap_the_same_stream_runs_on() -> None:
    router, now = _Router(), [0.0]
    router.clock = lambda: now[0]
    gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], 60)),  # type: ignore[arg-type]
                     StreamHints(), StreamMeter(0.0, 3, measured=True))
    gen.choose(_AnyProfile(), [cand("a")], ANY)
    gen.attempt_started(cand("a"))
    for k in range(60):
        now[0] += 0.01
        gen.response(_token(k))
    assert len(gen.delivered) == 60 and not gen.meter.capped


def test_a_measured_deployment_predicted_over_the_cap_is_not_chosen() -> None:
    """With both deployments measured, the one whose predicted stream cost is over the cap is
    no option at all (not even as the best effort); with every one over it the stream is
    refused before it starts, naming the cap and each deployment's prediction."""
    router = _Router()
    for dep in ("a/llm", "b/llm"):
        for _ in range(3):
            router.streams.observe(dep, prefill_ms=10.0, uncached_tokens=3, tpot_ms=10.0, load=0)
    a, b = cand("a"), dataclasses.replace(cand("b"), cost_usd=2e-5)  # b: 10x the $/s
    llm = parse_request(llm_request("chat", [1, 2, 3], 60))
    gen = Generation(router, llm, StreamHints(tpot_ms=5.0),  # type: ignore[arg-type]
                     StreamMeter(0.0, 3, measured=True))
    # neither meets 5 ms/token: the choice is a best effort over the options it may use
    free = gen.plan(_AnyProfile(), [a, b], ANY)  # type: ignore[arg-type]
    costs = {o.candidate.deployment_id: o.cost_usd for o in free.options}
    cap = (costs["a/llm"] + costs["b/llm"]) / 2
    capped = gen.plan(_AnyProfile(), [a, b],  # type: ignore[arg-type]
                      CallContext(Hints(1000.0, max_cost_usd=cap)))
    assert capped.candidate is a and {o.candidate.deployment_id for o in capped.options} == {
        "a/llm"}
    with pytest.raises(PolicyUnsatisfiable) as err:
        gen.plan(_AnyProfile(), [a, b],  # type: ignore[arg-type]
                 CallContext(Hints(1000.0, max_cost_usd=costs["a/llm"] / 2)))
    assert "x-max-cost-usd" in err.value.message and set(err.value.removed) == {"a/llm", "b/llm"}
    assert err.value.grpc_code == "FAILED_PRECONDITION"
