"""Soft: a cordoned backend takes calls only when nothing else can (drained ones are dropped
by the table builder and never reach this filter)."""

from __future__ import annotations

from placement.model import Availability, CallContext, Candidate


class CordonFilter:
    name = "cordon"
    hard = False

    def reject(self, c: Candidate, ctx: CallContext) -> str | None:
        return "backend cordoned" if c.availability is Availability.CORDONED else None
