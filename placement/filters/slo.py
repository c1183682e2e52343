"""Soft: the p95 latency estimate must fit the SLO: ``L(d, e) <= slo - margin``.

``L`` is the edge's own observed p95 for the deployment when it has one, else the table's
``rtt + queue + compute`` estimate.
"""

from __future__ import annotations

from placement.model import CallContext, Candidate


class SloFilter:
    name = "slo"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        budget = ctx.hints.slo_ms - ctx.slo_margin_ms
        latency = ctx.latency_ms(c)
        if latency > budget:
            return f"p95 {latency:.1f} ms > SLO budget {budget:.1f} ms"
        return None
