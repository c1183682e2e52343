"""A stream that moves for its ``x-tpot-ms`` keeps its ``x-max-cost-usd`` (README: the move
goes to a deployment it may use, "the same regions and cost cap"): ``Generation.moving``
passes over a deployment whose predicted cost for the tokens still owed, on top of what the
stream has cost so far, is over the caller's cap. It did not: the move went to the dearer
deployment and the stream was then cut at its cap (RESOURCE_EXHAUSTED), where staying would
have delivered every token within it."""

from __future__ import annotations

import dataclasses

from tritonclient.grpc import service_pb2

from placement.errors import CostCapReached
from placement.model import CallContext, Candidate, Hints
from services.edge.generation import Generation
from services.edge.hints import StreamHints
from services.edge.token_stats import StreamMeter, StreamStats
from services.edge.tokens import llm_request, parse_request


def cand(name: str, cost_usd: float = 2e-6) -> Candidate:  # 2e-6 per 2 ms call: $1e-3/s
    return Candidate(deployment_id=f"{name}/llm", backend_id=name, endpoint="h:1", variant="llm",
                     region="r", cloud="c", accelerator="gpu", quality=0.8, latency_p95_ms=10,
                     rtt_ms=0.0, queue_ms=0, compute_ms=2.0, cost_usd=cost_usd, spare_capacity=1)


def token(t: int) -> bytes:
    resp = service_pb2.ModelStreamInferResponse()
    resp.infer_response.outputs.add(name="TOKEN", datatype="INT32", shape=[1, 1])
    resp.infer_response.raw_output_contents.append(t.to_bytes(4, "little"))
    return bytes(resp.SerializeToString())


class _Router:
    """What Generation reads of the router when every declaration is already cached."""

    def __init__(self) -> None:
        self.streams = StreamStats()
        self.now = 0.0
        self.clock = lambda: self.now


class _AnyProfile:
    name = "default"
    hard_filters: tuple[()] = ()
    filters: tuple[()] = ()


TOKENS = 60


def run(cap: float) -> tuple[Generation, list[str]]:
    """A 60-token stream on a (cheap; 20 ms per token, then 100 ms: it will miss x-tpot-ms
    30) that may move to b (measured at 10 ms per token, 40x a's $/s). Returns the
    generation and the deployments its tokens came from."""
    router = _Router()
    s = router.streams
    s.declare("llm", True, TOKENS)
    for dep, tpot in (("a/llm", 20.0), ("b/llm", 10.0)):
        for _ in range(3):
            s.observe(dep, prefill_ms=10.0, uncached_tokens=3, tpot_ms=tpot, load=0)
    a, b = cand("a"), dataclasses.replace(cand("b"), cost_usd=8e-5)
    gen = Generation(router, parse_request(llm_request("chat", [1, 2, 3], TOKENS)),  # type: ignore[arg-type]
                     StreamHints(tpot_ms=30.0), StreamMeter(0.0, 3, measured=True))
    ctx = CallContext(Hints(1000.0, max_cost_usd=cap))
    on = gen.choose(_AnyProfile(), [a, b], ctx)[0]  # type: ignore[arg-type]
    assert on is a
    gen.attempt_started(on)
    served: list[str] = []
    gaps = iter([0.02] * 12 + [0.1] * TOKENS)
    while len(gen.delivered) < TOKENS:
        router.now += next(gaps) if on is a else 0.01
        gen.response(token(len(gen.delivered)))
        served.append(on.deployment_id)
        if gen.moving(on, "chat", 1) is not None:
            gen.attempt_ended(on)
            on = gen.choose(_AnyProfile(), [a, b], ctx)[0]  # type: ignore[arg-type]
            gen.attempt_started(on)
    gen.attempt_ended(on)
    return gen, served


def test_without_a_cap_the_slow_stream_moves_to_the_dearer_deployment() -> None:
    gen, served = run(float("inf"))
    assert "b/llm" in served and gen.meter.reasons == ["slow"]


def test_a_move_the_cap_cannot_pay_for_is_not_made_and_the_stream_ends_whole() -> None:
    # Staying on a, the stream costs $0.00504 in all (20 ms per token, then 100 ms, at
    # $1e-3/s); without a cap it moves to b after 18 tokens and costs $0.01764 (the owed
    # tokens at 10 ms each at $4e-2/s). A cap of $0.006 leaves the stay, not the move.
    cap = 0.006
    try:
        gen, served = run(cap)
    except CostCapReached as exc:  # the old edge: moved to b, then cut at the cap
        raise AssertionError(f"the stream was cut at its cap: {exc.message}") from None
    assert served == ["a/llm"] * TOKENS and gen.meter.reasons == []
    trailers = dict(gen.meter.trailers(None, None, served=True))
    assert float(trailers["x-cost-usd"]) <= cap, trailers
    assert trailers["x-tokens-out"] == str(TOKENS)
