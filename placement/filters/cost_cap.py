"""Hard: never charge more per call than the caller allows (``x-max-cost-usd``).

Every cap is real, 0 included (only free deployments qualify); ``math.inf`` means no cap.
"""

from __future__ import annotations

from placement.model import CallContext, Candidate


class CostCapFilter:
    name = "cost-cap"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        cap = ctx.hints.max_cost_usd
        if c.cost_usd > cap:
            return f"cost ${c.cost_usd:.8f} > cap ${cap:.8f}"
        return None
