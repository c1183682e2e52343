"""review10's stream-path findings (``/tmp/review10/REPORT.md`` 1, 2, 7, 8, 9), on the real
``route_stream``, ``Generation``, ``Router`` and attempt policy with a fake demo-LLM upstream
(``tests.llm_upstream_fake``): token i of prompt p is ``len(p) + i``, so the generation a
caller should get is known exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from placement.token_learning import TokenSpeed
from services.edge.router import CallRecord, Router
from services.edge.stream import route_stream
from services.edge.tokens import llm_request
from tests.llm_upstream_fake import FakeLlmUpstreams, tokens_of
from tests.unit.test_edge_hostile_limits import Context
from tests.unit.test_edge_resilience import Clock, cand, make_router

pytestmark = pytest.mark.asyncio

PROMPT = [1, 2, 3]  # token i of the generation is 3 + i


async def _one(req: bytes) -> AsyncIterator[bytes]:
    yield req


async def run(router: Router, req: bytes, md: list[tuple[str, str]]
              ) -> tuple[list[bytes], CallRecord, str]:
    rec = CallRecord("", "")
    got: list[bytes] = []
    status = "OK"
    try:
        async for r in route_stream(router, _one(req), md, 30.0, rec, Context()):  # type: ignore[arg-type]
            got.append(r)
    except Exception as exc:
        status = type(exc).__name__
    return got, rec, status


def two_backends(**backend: object) -> tuple[Router, FakeLlmUpstreams, Clock]:
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    ups = FakeLlmUpstreams(clock)
    for ep in ("ep0", "ep1"):
        ups.add(ep, **backend)  # type: ignore[arg-type]
    router.upstreams = ups  # type: ignore[assignment]
    return router, ups, clock


def slowing(declared: bool) -> tuple[Router, FakeLlmUpstreams]:
    """b0 and b1 serve m-v (a 60-token default), both measured at 10 ms per token; b0 slows to
    40 ms per token after 2 tokens. ``declared``: m-v's declaration already cached."""
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    for dep in ("b0/m-v", "b1/m-v"):
        for _ in range(3):
            router.streams.observe(dep, prefill_ms=1.0, uncached_tokens=3, tpot_ms=10.0, load=0)
    if declared:
        router.streams.declare("m-v", True, 60)
    ups = FakeLlmUpstreams(clock)
    ups.add("ep0", default_tokens=60, slow_after=2, slow_gap_s=0.04)
    ups.add("ep1", default_tokens=60)
    router.upstreams = ups  # type: ignore[assignment]
    return router, ups


SLOW = [("x-slo-ms", "100"), ("x-tpot-ms", "30")]


# -- finding 1: a move asks for the generation's remaining tokens, not the plan's guess ----

@pytest.mark.parametrize("hint", [None, "30", "100"])
async def test_a_stream_moved_for_its_tpot_gets_its_whole_generation_and_no_more(
        hint: str | None) -> None:
    """No MAX_TOKENS: the generation is the variant's 60-token default, whatever x-max-tokens
    (README: only the length the choice plans for). The move asked the new backend for
    x-max-tokens − delivered: 30 of 60 tokens ended OK with x-slo-met true, or 100 tokens
    where the generation has 60."""
    router, _ = slowing(declared=True)
    md = SLOW + ([("x-max-tokens", hint)] if hint else [])
    got, rec, status = await run(router, llm_request("m", PROMPT, None), md)
    trailers = dict(rec.stream)
    assert trailers.get("x-resumed-reason") == "slow", trailers  # the move happened
    assert status == "OK" and tokens_of(got) == list(range(3, 63)), (
        f"{status}: {len(got)} tokens; trailers {trailers}")


async def test_a_move_keeps_the_requests_max_tokens() -> None:
    """MAX_TOKENS 50 in the request wins over the variant's default and the hint."""
    router, _ = slowing(declared=True)
    got, rec, status = await run(router, llm_request("m", PROMPT, 50),
                                 [*SLOW, ("x-max-tokens", "20")])
    assert dict(rec.stream).get("x-resumed-reason") == "slow", rec.stream
    assert status == "OK" and tokens_of(got) == list(range(3, 53))


async def test_on_a_fresh_edge_the_watch_follows_the_whole_generation() -> None:
    """The variant's default is not cached when the stream starts: the watch planned for
    DEFAULT_MAX_TOKENS (16) tokens and stopped predicting after token 16, so the slow
    stream was never moved (x-tpot-met false). Once the commit's probe brings the declaration
    the watch follows the generation's 60 tokens, and the stream moves."""
    router, _ = slowing(declared=False)
    got, rec, status = await run(router, llm_request("m", PROMPT, None), SLOW)
    trailers = dict(rec.stream)
    assert status == "OK" and tokens_of(got) == list(range(3, 63)), trailers
    assert trailers.get("x-resumed-reason") == "slow" and trailers["x-tpot-met"] == "true", (
        trailers)


# -- finding 2: an unknown length is not "nothing owed"; a failed backend is no success -----

async def test_a_variant_without_a_tokens_param_ends_a_cut_stream_with_the_backends_status(
        ) -> None:
    """The variant declares switchyard_resumable but no ``tokens`` (any LLM but the demo),
    the request no MAX_TOKENS: its backend dies after 5 of 40 tokens. The unknown default
    (0) was read as 'every token delivered': the stream ended OK with 5 tokens and the dead
    backend got a success. What is owed is unknown, so it cannot resume: the backend's
    status, and the failure blamed."""
    router, _, _ = two_backends(fail_after=5, params={"switchyard_resumable": "true"})
    got, rec, status = await run(router, llm_request("m", PROMPT, None), [("x-slo-ms", "100")])
    assert len(got) == 5 and status == "BackendFailed" and rec.status == "UNAVAILABLE", (
        f"stream ended {status}/{rec.status} with {len(got)} of 40 tokens")
    assert rec.chosen is not None
    dep = router.stats.by_deployment[rec.chosen.deployment_id]
    assert dep.failures == 1 and not dep.latencies_ms, dep


async def test_a_tokens_param_with_spaces_is_the_variants_length() -> None:
    """``tokens: "40 "`` is a 40-token default (it was read as none, as in the test above)."""
    router, _, _ = two_backends(fail_after=5, params={"switchyard_resumable": "true",
                                                      "tokens": "40 "})
    got, rec, status = await run(router, llm_request("m", PROMPT, None), [("x-slo-ms", "100")])
    assert status == "OK" and tokens_of(got) == list(range(3, 43)), rec.stream
    assert dict(rec.stream)["x-resumed"] == "1"


async def test_control_a_variant_with_its_tokens_param_resumes_whole() -> None:
    router, _, _ = two_backends(fail_after=5)
    got, rec, status = await run(router, llm_request("m", PROMPT, None), [("x-slo-ms", "100")])
    assert status == "OK" and tokens_of(got) == list(range(3, 43))
    assert dict(rec.stream)["x-resumed"] == "1"


async def test_a_backend_failing_after_the_last_token_asked_is_not_recorded_as_a_success(
        ) -> None:
    """MAX_TOKENS 5, all 5 delivered, then UNAVAILABLE: the stream is whole (OK, nothing to
    resume), but the backend failed: a failure, never a success."""
    router, _, _ = two_backends(fail_after=5)
    got, rec, status = await run(router, llm_request("m", PROMPT, 5), [("x-slo-ms", "100")])
    assert status == "OK" and tokens_of(got) == list(range(3, 8))
    assert rec.chosen is not None
    dep = router.stats.by_deployment[rec.chosen.deployment_id]
    assert dep.failures == 1 and not dep.latencies_ms, dep


# -- finding 7: the latency sample is the attempt's, not the stream's --------------------

@pytest.mark.parametrize("why", ["failed", "slow"])
async def test_a_resumed_or_moved_streams_latency_sample_is_its_last_attempts(why: str) -> None:
    """``failed``: 5 tokens 1 s apart, then the backend dies; the other 35 come 10 ms apart on
    the deployment it resumed on, which got a ~5,350 ms sample (the stream's time from its
    first request) for ~350 ms of its own work. ``slow``: the same for a move away from a
    slow deployment (its 40 ms tokens charged to the fast target)."""
    if why == "failed":
        clock = Clock()
        router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
        ups = FakeLlmUpstreams(clock, first_gap_s=1.0)  # the first attempt: 1 s per token
        for ep in ("ep0", "ep1"):
            ups.add(ep, fail_after=5)
        router.upstreams = ups  # type: ignore[assignment]
        own_ms = 35 * 10
        md = [("x-slo-ms", "100")]
    else:
        router, ups = slowing(declared=True)
        md = SLOW
    got, rec, status = await run(router, llm_request("m", PROMPT, None), md)
    trailers = dict(rec.stream)
    length = 40 if why == "failed" else 60
    assert status == "OK" and tokens_of(got) == list(range(3, 3 + length)), trailers
    assert trailers["x-resumed-reason"] == why, trailers
    assert rec.chosen is not None
    if why == "slow":  # the target's tokens: those after the move, 10 ms apart
        own_ms = 10 * (60 - ups.get("ep0").sent)
    samples = list(router.stats.by_deployment[rec.chosen.deployment_id].latencies_ms)
    assert samples == [pytest.approx(own_ms, abs=1.0)], (
        f"{rec.chosen.deployment_id}'s latency samples {samples} (its own tokens took "
        f"~{own_ms} ms)")


# -- finding 8: x-ttft-ms counts from the first request ---------------------------------

async def test_ttft_is_counted_from_the_first_request_not_from_the_stream_open() -> None:
    """tritonclient's start_stream opens the stream (the handler runs) and the caller sends
    its prompt 2 s later; the first token comes 10 ms after the prompt. x-ttft-ms read ~2010
    ms and x-ttft-met / x-slo-met false (StreamMeter started at the handler's start)."""
    router, _, clock = two_backends()

    async def late() -> AsyncIterator[bytes]:
        clock.t += 2.0  # the caller's own pause before its first message
        yield llm_request("m", PROMPT, 4)

    rec = CallRecord("", "")
    md = [("x-slo-ms", "100"), ("x-ttft-ms", "500")]
    ctx = Context()
    got = [r async for r in route_stream(router, late(), md, 30.0, rec, ctx)]  # type: ignore[arg-type]
    t = dict(rec.stream)
    assert tokens_of(got) == [3, 4, 5, 6] and float(t["x-ttft-ms"]) == pytest.approx(10.0), t
    assert t["x-ttft-met"] == "true" and t["x-slo-met"] == "true", t


# -- finding 9: a stream allowed to change variant learns the others' declarations --------

@pytest.mark.parametrize("declared_first", [False, True])
async def test_a_slow_stream_allowed_to_change_variant_moves_to_a_measured_one(
        declared_first: bool) -> None:
    """x-allow-variant-change, x-tpot-ms 30: m-v slows to 40 ms per token on b0; b1 serves
    m-w, measured by the fleet at 10 ms per token (the route row: this edge never streamed on
    it) and declaring resumption. ``moving`` admits another variant only once its
    declaration is cached, and nothing asked for it: the stream stayed and missed x-tpot-ms.
    ``declared_first``: the control, m-w's declaration cached before the stream."""
    clock = Clock()
    b1 = dataclasses.replace(cand(1, 2e-6, 5), variant="m-w", deployment_id="b1/m-w",
                             tokens=TokenSpeed(1.0 / 3, 10.0, 0.0))
    router, _, _ = make_router([cand(0, 1e-6, 5), b1], {}, clock)
    for _ in range(3):
        router.streams.observe("b0/m-v", prefill_ms=1.0, uncached_tokens=3, tpot_ms=10.0,
                               load=0)
    router.streams.declare("m-v", True, 60)
    if declared_first:
        router.streams.declare("m-w", True, 60)
    ups = FakeLlmUpstreams(clock)
    ups.add("ep0", default_tokens=60, slow_after=2, slow_gap_s=0.04)
    ups.add("ep1", default_tokens=60)
    router.upstreams = ups  # type: ignore[assignment]
    got, rec, status = await run(router, llm_request("m", PROMPT, None),
                                 [*SLOW, ("x-allow-variant-change", "true")])
    trailers = dict(rec.stream)
    assert status == "OK" and len(got) == 60, trailers
    assert trailers.get("x-resumed-reason") == "slow" and trailers["x-tpot-met"] == "true", (
        f"no move: {trailers}; m-w declared? {router.streams.resumable('m-w')}")
    assert rec.chosen is not None and rec.chosen.deployment_id == "b1/m-w"
    assert ups.get("ep1").config_asks == (0 if declared_first else 1)


async def test_without_the_variant_change_hint_no_other_variant_is_asked() -> None:
    """The probe is for streams that may change variant only: m-v's own is cached, so no
    ModelConfig call at all."""
    router, ups = slowing(declared=True)
    got, _, status = await run(router, llm_request("m", PROMPT, None), SLOW)
    assert status == "OK" and len(got) == 60
    assert ups.get("ep0").config_asks == ups.get("ep1").config_asks == 0
