"""Hard: drop deployments the route table already marked unusable (drained, unhealthy, GPU lost)."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class RoutableFilter:
    name = "routable"
    hard = True

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        return c.dropped_reason or None
