"""Spread load over the near-best, weighted by spare capacity (power of two choices).

The band is every candidate with ``score >= best * (1 - band)``. Two of them are drawn with
probability proportional to spare capacity and the one with more spare capacity wins, so the
cheapest GPU is not herded into overload while the choice stays within ``band`` of the best.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from placement.model import Candidate


class SpreadPicker:
    name = "spread"

    def __init__(self, band: float = 0.05) -> None:
        self.band = band

    def pick(self, cands: Sequence[Candidate], scores: Sequence[float],
             rng: random.Random) -> int:
        best = max(scores)
        floor = best * (1.0 - self.band)
        band = [i for i, s in enumerate(scores) if s >= floor]
        if len(band) == 1:
            return band[0]
        weights = [max(cands[i].spare_capacity, 1e-9) for i in band]
        a, b = rng.choices(band, weights=weights, k=2)
        return a if cands[a].spare_capacity >= cands[b].spare_capacity else b
