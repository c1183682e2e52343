"""Latency: ``score(d) = min_latency / latency(d)`` over the survivors (1.0 for the fastest)."""

from __future__ import annotations

from collections.abc import Sequence

from placement.model import CallContext, Candidate


class LatencyScorer:
    name = "latency"

    def score(self, cands: Sequence[Candidate], ctx: CallContext) -> list[float]:
        lat = [max(ctx.latency_ms(c), 1e-6) for c in cands]
        fastest = min(lat)
        return [fastest / x for x in lat]
