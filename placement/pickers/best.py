"""Pick the highest score; ties go to the earlier candidate (tables are ranked cheapest first)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from placement.model import Candidate


class BestPicker:
    name = "best"

    def pick(self, cands: Sequence[Candidate], scores: Sequence[float],
             rng: random.Random) -> int:
        return max(range(len(scores)), key=lambda i: (scores[i], -i))
