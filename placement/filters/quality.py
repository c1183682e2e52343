"""Hard: the variant's quality must reach the call's floor (``x-min-quality``)."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class QualityFilter:
    name = "quality"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        if c.quality < ctx.hints.min_quality:
            return f"quality {c.quality:.2f} < floor {ctx.hints.min_quality:.2f}"
        return None
