"""Prototype: an indexed per-call choice that gives ``Profile.choose``'s answer without
filtering every candidate. A proposal for ``placement/pipeline.py``, measured in
``benchmarks/decisions.py``; nothing in ``placement/`` uses it.

Why it is exact. Every filter is a per-candidate predicate, and the scorers only need the
best survivor:

- ``cheapest``: ``score = cheapest / cost`` and the spread band is every survivor with
  ``score >= 1 - band``. Walking survivors in ascending cost, the first one *is* the
  cheapest; once ``cheapest / cost < 1 - band`` no later candidate can join the band, so the
  walk stops. The band is then handed to the same ``SpreadPicker`` in the table's original
  order, so the same ``rng`` draws give the same pick.
- ``fastest``: the best is the survivor with the lowest ``ctx.latency_ms``. The table is
  walked in ascending *table* latency, skipping the (few) deployments the edge has its own
  observed p95 for; those are checked separately; the lower of the two wins, ties to the
  earlier table position (``BestPicker``'s rule).

Work per call is O(position of the first feasible candidate + band size + observed
deployments) instead of O(N x filters). The indexes are built once per route table (the
edge already builds its candidate tuples once per table). When nothing survives, it falls
back to the full ``Profile`` path (``_fallback``), which is rare and allowed to be slow.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from placement.model import CallContext, Candidate
from placement.pipeline import Decision, Profile


class IndexedTable:
    """One route table with the orders the fast path walks, built once per table."""

    __slots__ = ("by_cost", "by_latency", "cands", "position")

    def __init__(self, cands: Sequence[Candidate]) -> None:
        self.cands = tuple(cands)
        idx = range(len(self.cands))
        self.by_cost = tuple(sorted(idx, key=lambda i: (self.cands[i].cost_usd, i)))
        self.by_latency = tuple(sorted(idx, key=lambda i: (self.cands[i].latency_p95_ms, i)))
        self.position = {c.deployment_id: i for i, c in enumerate(self.cands)}


class IndexedChooser:
    """``choose`` with the same answer as ``profile.choose`` (cheapest or fastest)."""

    def __init__(self, profile: Profile) -> None:
        if profile.name not in ("cheapest", "fastest"):
            raise ValueError(f"no indexed path for profile {profile.name!r}")
        self.profile = profile
        self.filters = profile.filters
        self.band = getattr(profile.picker, "band", 0.0)

    def _keeps(self, c: Candidate, ctx: CallContext) -> bool:
        return all(f.reject(c, ctx) is None for f in self.filters)

    def choose(self, table: IndexedTable, ctx: CallContext, rng: random.Random) -> Decision:
        if self.profile.name == "cheapest":
            return self._cheapest(table, ctx, rng)
        return self._fastest(table, ctx)

    def _cheapest(self, t: IndexedTable, ctx: CallContext, rng: random.Random) -> Decision:
        cands, keeps = t.cands, self._keeps
        band_idx: list[int] = []
        cheapest = -1.0
        floor = 1.0 - self.band
        for i in t.by_cost:
            c = cands[i]
            if cheapest >= 0.0:
                score = 1.0 if c.cost_usd <= 0 else (cheapest / c.cost_usd if cheapest > 0
                                                      else 0.0)
                if score < floor:
                    break
            if keeps(c, ctx):
                if cheapest < 0.0:
                    cheapest = c.cost_usd
                band_idx.append(i)
        if not band_idx:
            return self.profile._fallback(cands, ctx)
        band_idx.sort()
        band = [cands[i] for i in band_idx]
        scores = self.profile.scorers[0][0].score(band, ctx)
        chosen = band[self.profile.picker.pick(band, scores, rng)]
        # feasible_count is only the band here (the full count would need the O(N) pass).
        return Decision(chosen, True, len(band))

    def _fastest(self, t: IndexedTable, ctx: CallContext) -> Decision:
        cands, keeps = t.cands, self._keeps
        observed = ctx.observed_p95_ms
        best_i, best_lat = -1, float("inf")
        for i in t.by_latency:  # table latency order; observed ones are handled below
            c = cands[i]
            if c.deployment_id in observed:
                continue
            if keeps(c, ctx):
                best_i, best_lat = i, max(c.latency_p95_ms, 1e-6)
                break
        for dep, seen in observed.items():
            i = t.position.get(dep)
            if i is None:
                continue
            lat = max(seen, 1e-6)
            if (lat < best_lat or (lat == best_lat and i < best_i)) and keeps(cands[i], ctx):
                best_i, best_lat = i, lat
        if best_i < 0:
            return self.profile._fallback(cands, ctx)
        return Decision(cands[best_i], True, 1)
