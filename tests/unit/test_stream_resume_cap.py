"""A stream resumed after its backend failed keeps its ``x-max-cost-usd`` on the whole
stream, as a move for ``x-tpot-ms`` does (``test_stream_move_cap``): ``Generation.plan``
prices the deployments for the tokens still owed against what the cap leaves after what the
stream has already cost. It priced them against the whole cap: the resume went to a dearer
deployment the rest of the budget could not pay for, and the stream was then cut at its cap
(RESOURCE_EXHAUSTED, tokens missing) where a cheaper one would have finished within it."""

from __future__ import annotations

import dataclasses

from placement.errors import CostCapReached
from placement.model import CallContext, Hints
from services.edge.generation import Generation
from services.edge.hints import StreamHints
from services.edge.token_stats import StreamMeter
from services.edge.tokens import llm_request, parse_request
from tests.unit.test_stream_move_cap import TOKENS, _AnyProfile, _Router, cand, token

FAILS_AFTER = 30


def resumed(cap: float) -> tuple[Generation, list[str], str]:
    """A 60-token stream (x-tpot-ms 30) on a (cheap, 10 ms per token) whose backend fails
    after 30 tokens; it resumes on b (40x a's $/s, 10 ms per token: meets the objective)
    or c (a's price, 40 ms per token: misses it). Returns the generation, the deployments
    its tokens came from and b's predicted cost for the 30 tokens owed."""
    router = _Router()
    s = router.streams
    s.declare("llm", True, TOKENS)
    for dep, tpot in (("a/llm", 10.0), ("b/llm", 10.0), ("c/llm", 40.0)):
        for _ in range(3):
            s.observe(dep, prefill_ms=0.1, uncached_tokens=3, tpot_ms=tpot, load=0)
    a, c = cand("a"), cand("c")
    b = dataclasses.replace(cand("b"), cost_usd=8e-5)
    gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], TOKENS)),  # type: ignore[arg-type]
                     StreamHints(tpot_ms=30.0), StreamMeter(0.0, 3, measured=True))
    ctx = CallContext(Hints(1000.0, max_cost_usd=cap))
    on = gen.choose(_AnyProfile(), [a, b, c], ctx)[0]  # type: ignore[arg-type]
    assert on is a
    gen.attempt_started(on)
    served: list[str] = []
    for _ in range(FAILS_AFTER):
        router.now += 0.01
        gen.response(token(len(gen.delivered)))
        served.append(on.deployment_id)
    gen.attempt_ended(on)  # a's backend failed; the stream resumes on b or c
    uncapped = gen.plan(_AnyProfile(), [b, c], CallContext(Hints(1000.0)))  # type: ignore[arg-type]
    b_owed = next(o.cost_usd for o in uncapped.options if o.candidate is b)
    on = gen.choose(_AnyProfile(), [b, c], ctx)[0]  # type: ignore[arg-type]
    gen.attempt_started(on)
    pace = 0.01 if on is b else 0.04
    while len(gen.delivered) < TOKENS:
        router.now += pace
        gen.response(token(len(gen.delivered)))
        served.append(on.deployment_id)
    gen.attempt_ended(on)
    return gen, served, f"{b_owed!r}"


def test_without_a_cap_the_resume_takes_the_deployment_that_meets_the_objective() -> None:
    _, served, _ = resumed(float("inf"))
    assert served[FAILS_AFTER:] == ["b/llm"] * (TOKENS - FAILS_AFTER)


def test_a_resume_the_rest_of_the_cap_cannot_pay_for_goes_where_it_can() -> None:
    # b's predicted cost for the 30 tokens owed fits the cap on its own, not on top of the
    # ~$3e-4 a's 30 tokens cost: c (a's price) is the resume that finishes within the cap.
    _, _, b_owed = resumed(float("inf"))
    spent = 0.0003
    cap = float(b_owed) + spent / 2
    try:
        gen, served, _ = resumed(cap)
    except CostCapReached as exc:  # the old edge: resumed on b, then cut at the cap
        raise AssertionError(f"the stream was cut at its cap: {exc.message}") from None
    assert served[FAILS_AFTER:] == ["c/llm"] * (TOKENS - FAILS_AFTER)
    trailers = dict(gen.meter.trailers(None, None, served=True))
    assert float(trailers["x-cost-usd"]) <= cap, trailers
    assert trailers["x-tokens-out"] == str(TOKENS)
