"""``benchmarks.tokens_versus.why``: why a Switchyard prediction kept a stream off a pool."""

from __future__ import annotations

from benchmarks.tokens_versus import why
from placement.model import Candidate
from placement.streams import StreamAsk, StreamOption, TokenEstimate, predict

ASK = StreamAsk(prompt_tokens=1000, max_tokens=100, ttft_ms=400.0, tpot_ms=25.0)


def _cand(name: str) -> Candidate:
    return Candidate(deployment_id=f"{name}/llm", backend_id=name, endpoint=f"{name}:1",
                     variant="llm", region="r", cloud="c", accelerator="x", quality=1.0,
                     latency_p95_ms=100.0, rtt_ms=10.0, queue_ms=0.0, compute_ms=1000.0,
                     cost_usd=0.001, spare_capacity=1.0)


def _opt(rate: float, tpot: float = 10.0, usd: float = 1.0) -> StreamOption:
    return predict(_cand("a"), TokenEstimate(rate, tpot, 0.0, usd), 0, ASK)


def test_each_reason() -> None:
    chosen = _opt(0.05, usd=2.0)
    assert why(None, chosen, ASK) == "unmeasured"
    assert why(_opt(0.1, tpot=30.0), chosen, ASK) == "TPOT over the objective"
    assert why(_opt(0.5), chosen, ASK) == "TTFT over the objective"  # 510 ms > 400
    assert why(_opt(0.3), chosen, ASK) == "TTFT in the guard band"  # 310 ms: > 200, ≤ 400
    assert why(_opt(0.1, usd=3.0), chosen, ASK) == "feasible, priced dearer"
    assert why(_opt(0.1, usd=1.0), chosen, ASK) == "feasible, cheaper, not chosen (band/hash)"
