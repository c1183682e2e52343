"""Soft: the deployment must have spare capacity (requests/s) left."""

from __future__ import annotations

from placement.model import CallContext, Candidate


class CapacityFilter:
    name = "capacity"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        return None if c.spare_capacity > 0 else "no spare capacity"
