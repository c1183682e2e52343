"""Regions. ``ResidencyFilter`` (hard) keeps a call inside the regions its tenant allows, even on
failover; ``AvoidRegionFilter`` (soft) steers a retry away from a region that just failed."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class ResidencyFilter:
    name = "residency"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        allowed = ctx.hints.allowed_regions
        if allowed and c.region not in allowed:
            return f"region {c.region} not allowed for this call"
        return None


class AvoidRegionFilter:
    name = "avoid-region"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        if c.region in ctx.avoid_regions:
            return f"region {c.region} failed earlier in this call"
        return None
