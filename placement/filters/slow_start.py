"""Soft: slow start. A deployment back from ejection or failed health checks takes a share
of traffic that grows linearly from ``MIN_SHARE`` to 1 over the edge's ramp, so a recovered
backend (or a whole region coming back) is not flooded at once.

The edge sets ``ctx.warming[deployment] = share`` and one uniform ``ctx.draw`` per call; the
deployment is admitted when ``draw < share``.
"""

from __future__ import annotations

from placement.model import CallContext, Candidate

MIN_SHARE = 0.1


class SlowStartFilter:
    name = "slow-start"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        share = ctx.warming.get(c.deployment_id)
        if share is None or ctx.draw < share:
            return None
        return f"slow start after recovery ({share:.0%} of traffic)"
