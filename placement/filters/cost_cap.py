"""Hard: never charge more per call than the caller allows (``x-max-cost-usd``; 0 = no cap)."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class CostCapFilter:
    name = "cost-cap"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        cap = ctx.hints.max_cost_usd
        if cap > 0 and c.cost_usd > cap:
            return f"cost ${c.cost_usd:.8f} > cap ${cap:.8f}"
        return None
