"""Hard: drop deployments the edge will not use (with the edge's own reason: outlier
ejection, a failing health check), or that this call's failures already ruled out."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class EjectedFilter:
    name = "ejected"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        if c.deployment_id in ctx.exclude:
            return "ruled out by this call's failed attempts (it or its server)"
        return ctx.unusable.get(c.deployment_id)
