"""The three policy interfaces. Implementations live one per module in filters/, scorers/, pickers/.

A routing rule is a new file implementing one of these, registered by name in
``placement.registry``; the pipeline (``placement.pipeline``) runs filters → scorers → picker.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from placement.model import CallContext, Candidate


class Filter(Protocol):
    """Removes candidates a call may not use.

    ``hard`` filters hold even when nothing is feasible (health, residency, quality floor);
    soft ones (SLO, cost cap, capacity) are relaxed for the lowest-latency fallback.
    """

    name: str
    hard: bool

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        """Why ``c`` is removed for this call, or None to keep it."""
        ...


class Scorer(Protocol):
    """Ranks candidates: one value in [0, 1] per candidate, higher is better. Knows no weights."""

    name: str

    def score(self, cands: Sequence[Candidate], ctx: CallContext) -> list[float]: ...


class Picker(Protocol):
    """Chooses one candidate from scored survivors."""

    name: str

    def pick(self, cands: Sequence[Candidate], scores: Sequence[float],
             rng: random.Random) -> int:
        """Index into ``cands`` of the chosen candidate."""
        ...
