"""The per-call choice: filters → scorers → picker, shared by edges, placement and the simulator.

``Profile.choose`` returns a ``Decision``. When every candidate is removed it falls back to
a candidate that passes the *hard* filters (health, residency, quality, cost cap), chosen by
its chance of meeting the call's SLO (``placement.meet``; the lowest-latency one by the
strict estimate with ``FALLBACK_CHANCE`` off), and marks the decision ``slo_met=False``;
with ``fail_fast`` it raises ``NothingFeasible`` instead, carrying what removed what and the
best latency on offer. When even the hard filters leave nothing, it raises
``PolicyUnsatisfiable`` if the call's own policy (``POLICY_FILTERS``: regions, quality floor,
cost cap) removes every candidate in the table, healthy or not (no retry can help), else
``NoHealthyDeployment`` (retry later).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from placement import hot_rows, meet
from placement import reserve as reserve_rule
from placement.errors import NoHealthyDeployment, NothingFeasible, PolicyUnsatisfiable
from placement.framework import Filter, Picker, Scorer
from placement.model import CallContext, Candidate

# The fallback among rows whose p95 with no wait of this edge's own fits the SLO budget
# first (``_fits_idle``): off, measured by ``benchmarks.cost_check --variants fallback-idle-fit``.
FALLBACK_IDLE_FIT = False
# The fallback by each row's chance of meeting the call's SLO (``placement.meet``): on;
# ``benchmarks.cost_check --variants fallback-fastest`` is the brain before it.
FALLBACK_CHANCE = True
# The fallback keeps to the rows outside the call's failure domains while any is healthy
# (``ctx.avoid_regions``, which ``placement.attempts`` widens as attempts fail; the
# avoid-region filter is soft, so the fallback saw every healthy row): on;
# ``benchmarks.cost_check --variants fallback-ignores-avoid`` is the brain before it.
FALLBACK_AVOIDS = True


def _fits_idle(healthy: Sequence[Candidate], ctx: CallContext) -> list[Candidate]:
    """With ``FALLBACK_IDLE_FIT``: the rows that would meet the call's SLO budget if a slot
    were free (``ctx.p95_ms``, no wait of this edge's own, no learned margin). Past its slot
    share a row's ``latency_ms`` is the worst case (every slot busy ahead), so without this
    the fallback can prefer a row within its share that cannot meet the SLO even idle (a
    T4 at 1.5× a 50 ms mean for a 70 ms call) over one that can if a slot is free: that is
    most of held-out-near-capacity's "service-time tail" misses (``cost_check --detail``).
    Measured and off: held-out-near-capacity seed 0 98.75 → 92.47 % ("queueing not
    foreseen" 299 → 2,658): every edge past its share falls back onto the same fast rows,
    the herd the slot shares exist to stop; the other scenarios were not run."""
    if not FALLBACK_IDLE_FIT:
        return []
    budget = ctx.hints.slo_ms - ctx.slo_margin_ms
    return [c for c in healthy if ctx.p95_ms(c) <= budget]


# Called as observe(stage, plugin, seconds) for a sample of calls; wired to a histogram by services.
StageObserver = Callable[[str, str, float], None]

# Hard filters that read only the call's policy, never the fleet's health or load: when they
# alone remove every candidate, the call can never be served as asked.
POLICY_FILTERS = frozenset({"residency", "quality", "cost-cap"})


@dataclass(frozen=True, slots=True)
class Decision:
    candidate: Candidate
    slo_met: bool
    feasible_count: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """One candidate's fate in ``Profile.explain``."""

    candidate: Candidate
    feasible: bool
    reason: str
    score: float


class Profile:
    """A named routing profile: filters, weighted scorers and a picker."""

    def __init__(self, name: str, filters: Sequence[Filter],
                 scorers: Sequence[tuple[Scorer, float]], picker: Picker,
                 observer: StageObserver | None = None, sample_every: int = 64,
                 cost_band: float | None = None) -> None:
        """``cost_band``: set when the score is cost alone and the picker spreads over the
        candidates within this band of the cheapest; then ``choose(..., cost_sorted=True)``
        may stop walking a cost-sorted table at the band's edge (same answer, O(band))."""
        self.name = name
        self.cost_band = cost_band
        self.filters = tuple(filters)
        self.hard_filters = tuple(f for f in filters if f.hard)
        self.policy_filters = tuple(f for f in self.hard_filters if f.name in POLICY_FILTERS)
        self.scorers = tuple(scorers)
        self.picker = picker
        self.observer = observer
        self._sample_every = max(1, sample_every)
        self._calls = 0

    def choose(self, cands: Sequence[Candidate], ctx: CallContext,
               rng: random.Random, cost_sorted: bool = False,
               reserve: reserve_rule.Reserve | None = None, now: float = 0.0) -> Decision:
        """Pick one candidate for a call (see the module docstring for the fallbacks).

        ``cost_sorted``: ``cands`` are in ascending cost (the edge's tables are), so a
        cost-banded profile can stop at the band's edge instead of filtering every row.
        ``reserve``: this edge's room held back for tighter SLO classes (``placement.reserve``,
        on the caller's clock ``now``): among the rows that pass, those this call would leave
        short of what is held for tighter classes are dropped while any other passes; the
        call's own need is recorded (with ``reserve.FALLBACK_ONLY``, only when it falls back).
        """
        self._calls += 1
        if reserve is None:
            return self._decide(cands, ctx, rng, cost_sorted, {})
        if not reserve_rule.FALLBACK_ONLY:
            reserve.observe(cands, ctx, self.hard_filters, now)
        decision = self._decide(cands, ctx, rng, cost_sorted,
                                reserve.held(ctx.hints.slo_ms, now))
        if reserve_rule.FALLBACK_ONLY and not decision.slo_met:
            reserve.observe(cands, ctx, self.hard_filters, now)
        return decision

    def _decide(self, cands: Sequence[Candidate], ctx: CallContext, rng: random.Random,
                cost_sorted: bool, held: dict[str, float]) -> Decision:
        if self.observer is not None and self._calls % self._sample_every == 0:
            return self._choose_timed(cands, ctx, rng, held)
        if cost_sorted and self.cost_band is not None and not held:
            decision = self._choose_cost_sorted(cands, ctx, rng, self.cost_band)
            if decision is not None:
                return decision
        survivors = [c for c in cands if self._keeps(c, ctx, self.filters)]
        if survivors:
            survivors = list(hot_rows.keep_cool(reserve_rule.spare(survivors, ctx, held), ctx))
            scores = self._score(survivors, ctx)
            chosen = survivors[self.picker.pick(survivors, scores, rng)]
            return Decision(chosen, True, len(survivors))
        return self._fallback(cands, ctx, rng)

    def explain(self, cands: Sequence[Candidate], ctx: CallContext) -> list[Verdict]:
        """Every candidate with the first filter that removed it, or its weighted score."""
        removed: dict[str, str] = {}
        survivors: list[Candidate] = []
        for c in cands:
            reason = self._first_rejection(c, ctx, self.filters)
            if reason is None:
                survivors.append(c)
            else:
                removed[c.deployment_id] = reason
        scores = dict(zip((c.deployment_id for c in survivors),
                          self._score(survivors, ctx), strict=True)) if survivors else {}
        return [Verdict(c, c.deployment_id in scores,
                        removed.get(c.deployment_id, "feasible"),
                        scores.get(c.deployment_id, 0.0)) for c in cands]

    def _choose_cost_sorted(self, cands: Sequence[Candidate], ctx: CallContext,
                            rng: random.Random, band_width: float) -> Decision | None:
        """Walk ascending cost; the band is every survivor with cost <= cheapest/(1-band).
        None: a row of the band is hot (``placement.hot_rows``), so the full filter decides."""
        band: list[Candidate] = []
        limit = float("inf")
        filters = self.filters
        for c in cands:
            if c.cost_usd > limit:
                break
            if all(f.reject(c, ctx) is None for f in filters):
                if not band:
                    cheapest = c.cost_usd
                    limit = 0.0 if cheapest <= 0 else (
                        cheapest / (1.0 - band_width) if band_width < 1 else float("inf"))
                band.append(c)
        if not band:
            return self._fallback(cands, ctx, rng)
        if hot_rows.ON and any(hot_rows.hot(c, ctx) for c in band):
            return None
        scores = self._score(band, ctx)
        return Decision(band[self.picker.pick(band, scores, rng)], True, len(band))

    # -- steps ---------------------------------------------------------------------------

    @staticmethod
    def _keeps(c: Candidate, ctx: CallContext, filters: Sequence[Filter]) -> bool:
        return all(f.reject(c, ctx) is None for f in filters)

    @staticmethod
    def _first_rejection(c: Candidate, ctx: CallContext,
                         filters: Sequence[Filter]) -> str | None:
        for f in filters:
            reason = f.reject(c, ctx)
            if reason is not None:
                return f"{f.name}: {reason}"
        return None

    def _score(self, cands: Sequence[Candidate], ctx: CallContext) -> list[float]:
        if len(self.scorers) == 1:
            return self.scorers[0][0].score(cands, ctx)
        total = [0.0] * len(cands)
        weight_sum = sum(w for _, w in self.scorers) or 1.0
        for scorer, weight in self.scorers:
            for i, s in enumerate(scorer.score(cands, ctx)):
                total[i] += weight * s / weight_sum
        return total

    def _fallback(self, cands: Sequence[Candidate], ctx: CallContext,
                  rng: random.Random | None = None) -> Decision:
        removed = {c.deployment_id: self._first_rejection(c, ctx, self.filters) or ""
                   for c in cands}
        healthy = [c for c in cands if self._keeps(c, ctx, self.hard_filters)]
        if not healthy:
            if cands and not any(self._keeps(c, ctx, self.policy_filters) for c in cands):
                raise self._unsatisfiable(cands, ctx)
            why = "; ".join(f"{d}: {r}" for d, r in removed.items()) or "no deployments"
            raise NoHealthyDeployment(f"no healthy deployment may serve this call ({why})",
                                      removed=removed)
        if FALLBACK_AVOIDS and ctx.avoid_regions:
            # A cloud outage's dead servers stay healthy rows until the table says so; once
            # the call's attempts marked their regions, a retry that fell back went on
            # choosing them by their old, good estimates: a drill's call spent all three
            # attempts on the dead cloud's three servers (test_drills[cloud-outage]).
            healthy = [c for c in healthy if c.region not in ctx.avoid_regions] or healthy
        fastest = min(_fits_idle(healthy, ctx) or healthy, key=ctx.latency_ms)
        if ctx.hints.fail_fast:
            best = ctx.latency_ms(fastest)
            raise NothingFeasible(
                f"no deployment meets SLO {ctx.hints.slo_ms:.0f} ms; best p95 on offer "
                f"{best:.1f} ms ({fastest.deployment_id})",
                best_latency_ms=best, removed=removed)
        if FALLBACK_CHANCE:
            return Decision(meet.choose(healthy, ctx, rng), False, 0)
        return Decision(fastest, False, 0)

    def _unsatisfiable(self, cands: Sequence[Candidate], ctx: CallContext
                       ) -> PolicyUnsatisfiable:
        """What the table offers at best, against what the call asked for."""
        h = ctx.hints
        removed = {c.deployment_id: self._first_rejection(c, ctx, self.policy_filters) or ""
                   for c in cands}
        best_q = max(c.quality for c in cands)
        cheapest = min(c.cost_usd for c in cands)
        regions = tuple(sorted({c.region for c in cands}))
        asked = [f"quality >= {h.min_quality:g}"]
        if h.max_cost_usd != float("inf"):
            asked.append(f"cost <= ${h.max_cost_usd:.8f}")
        if h.allowed_regions:
            asked.append(f"regions {sorted(h.allowed_regions)}")
        return PolicyUnsatisfiable(
            f"no deployment can meet this call's policy ({', '.join(asked)}); on offer: "
            f"best quality {best_q:g}, lowest cost ${cheapest:.8f}, regions {list(regions)}",
            best_quality=best_q, lowest_cost_usd=cheapest, regions=regions, removed=removed)

    def _choose_timed(self, cands: Sequence[Candidate], ctx: CallContext,
                      rng: random.Random, held: dict[str, float]) -> Decision:
        assert self.observer is not None
        survivors = list(cands)
        for f in self.filters:
            t0 = time.perf_counter()
            survivors = [c for c in survivors if f.reject(c, ctx) is None]
            self.observer("filter", f.name, time.perf_counter() - t0)
        if not survivors:
            return self._fallback(cands, ctx, rng)
        survivors = list(hot_rows.keep_cool(reserve_rule.spare(survivors, ctx, held), ctx))
        t0 = time.perf_counter()
        scores = self._score(survivors, ctx)
        self.observer("scorer", "+".join(s.name for s, _ in self.scorers),
                      time.perf_counter() - t0)
        t0 = time.perf_counter()
        chosen = survivors[self.picker.pick(survivors, scores, rng)]
        self.observer("picker", self.picker.name, time.perf_counter() - t0)
        return Decision(chosen, True, len(survivors))
