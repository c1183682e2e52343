"""Soft: slow start. A deployment back from ejection or failed health checks takes a share
of traffic that grows linearly from ``MIN_SHARE`` to 1 over the edge's ramp, so a recovered
backend (or a whole region coming back) is not flooded at once.

The edge sets ``ctx.warming[deployment] = share`` and one uniform ``ctx.draw`` per call; the
deployment is admitted when ``draw < share``. The share itself is :func:`ramp_share`, the one
linear rule: the Python edge's ``services.edge.slowstart`` reads it per tick, placement's
compiled splits for Envoy edges (``placement.splits``, ``services.xds.returns``) read it at
the start of each compile step.
"""

from __future__ import annotations

from placement.model import CallContext, Candidate

MIN_SHARE = 0.1


def ramp_share(elapsed_s: float, ramp_s: float) -> float | None:
    """The share of traffic a deployment back for ``elapsed_s`` takes over a ramp of
    ``ramp_s``: ``MIN_SHARE`` at its return (and before it), rising linearly to 1; None once
    the ramp is over (a full share: no longer warming) or with no ramp (``ramp_s`` 0)."""
    if ramp_s <= 0:
        return None
    share = MIN_SHARE + (1 - MIN_SHARE) * max(elapsed_s, 0.0) / ramp_s
    return None if share >= 1.0 else share


class SlowStartFilter:
    name = "slow-start"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        share = ctx.warming.get(c.deployment_id)
        if share is None or ctx.draw < share:
            return None
        return f"slow start after recovery ({share:.0%} of traffic)"
