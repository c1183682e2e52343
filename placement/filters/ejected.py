"""Hard: drop deployments the edge has ejected as outliers, or already tried for this call."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class EjectedFilter:
    name = "ejected"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        if c.deployment_id in ctx.exclude:
            return "already tried for this call"
        if c.deployment_id in ctx.ejected:
            return "ejected by the edge (outlier detection)"
        return None
