"""Soft: the p95 latency estimate must fit the SLO: ``L(d, e) + m(d, slo) <= slo - margin``.

``L`` is ``CallContext.latency_ms``: the edge's own observed p95 for the deployment when it
has one, else the table's ``rtt + queue + compute`` estimate, plus the wait this edge's own
calls in flight predict. ``m`` is the margin the edge learned from calls of this SLO class
that missed on ``d`` (``placement.feedback``; 0 until one does).
"""

from __future__ import annotations

from placement.model import CallContext, Candidate


class SloFilter:
    name = "slo"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        budget = ctx.hints.slo_ms - ctx.slo_margin_ms
        latency = ctx.latency_ms(c)
        learned = ctx.slo_margins.get(c.deployment_id, 0.0)
        if latency + learned > budget:
            if learned:
                return (f"p95 {latency:.1f} ms + {learned:.1f} ms learned from misses > "
                        f"SLO budget {budget:.1f} ms")
            return f"p95 {latency:.1f} ms > SLO budget {budget:.1f} ms"
        return None
