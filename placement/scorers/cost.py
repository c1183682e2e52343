"""Cost: ``score(d) = min_cost / cost(d)`` over the survivors (1.0 for the cheapest).

Free deployments (cost 0) score 1; a ratio keeps "within 5 % of the cheapest" meaning
"score >= 1/1.05".
"""

from __future__ import annotations

from collections.abc import Sequence

from placement.model import CallContext, Candidate


class CostScorer:
    name = "cost"

    def score(self, cands: Sequence[Candidate], ctx: CallContext) -> list[float]:
        cheapest = min(c.cost_usd for c in cands)
        return [1.0 if c.cost_usd <= 0 else cheapest / c.cost_usd for c in cands]
