"""The LLM-stream choice's test fleet, shared by the unit tests of ``placement/streams.py``,
its fleet view and ``explain --stream``: one candidate per server name, a fast expensive
GPU and a slow cheap one (per token: 0.1 vs 1.0 ms prefill, 5 vs 40 ms decode)."""

from __future__ import annotations

from placement.model import Candidate
from placement.streams import TokenEstimate


def cand(name: str, rtt: float = 1.0) -> Candidate:
    return Candidate(deployment_id=f"{name}/llm", backend_id=name, endpoint=f"{name}:1",
                     variant="llm", region="r", cloud="c", accelerator="gpu", quality=0.8,
                     latency_p95_ms=50.0, rtt_ms=rtt, queue_ms=0.0, compute_ms=1.0,
                     cost_usd=1e-6, spare_capacity=10.0)


FAST = TokenEstimate(prefill_ms_per_token=0.1, tpot_base_ms=5.0, tpot_per_stream_ms=1.0,
                     usd_per_second=8.0 / 3600)
SLOW = TokenEstimate(prefill_ms_per_token=1.0, tpot_base_ms=40.0, tpot_per_stream_ms=8.0,
                     usd_per_second=0.3 / 3600)
