"""Failover orders for Envoy, computed by placement's own pipeline (not a second brain).

A call tries deployments in the order ``Profile.choose`` would fall back through: the ones
every filter keeps (feasible), cheapest first, then the ones only the hard filters keep,
fastest first; the rest never. Of the hints, only the SLO reaches Envoy so far, and the only
filter that reads it is ``slo`` (``latency <= slo - margin``), so for whole-millisecond SLOs
the order can change only at ``ceil(latency + margin)`` of some candidate: :func:`slo_classes`
evaluates the pipeline once per such breakpoint and keeps the ranges whose order differs.
Envoy matches a call's SLO (rounded down to whole ms by the listener's Lua, so never looser)
against those ranges.

What a per-call edge decides from its own calls in flight (spilling past its slot share) and
from its misses (the margins of ``placement.feedback``) reaches Envoy as :func:`weighted`:
the order per class with the margins placement learned from the edge's access log, and the
fraction of the class's calls each feasible deployment should take first
(``placement.splits``), pushed as one rotation of the order per deployment (that deployment
first, then the order without it). A retry in any rotation goes to the first deployment of
the order not yet tried, as in the plain order.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from placement import queueing
from placement.model import CallContext, Candidate, Hints
from placement.pipeline import Profile
from placement.splits import RATE_HEADROOM, UNKNOWN, Demand, split


@dataclass(frozen=True)
class SloClass:
    """Calls whose whole-ms SLO is in ``[lo, hi)`` (``hi`` None: no upper end) use ``order``."""

    lo: int
    hi: int | None
    order: tuple[str, ...]  # deployment ids
    feasible: frozenset[str] = frozenset()  # of ``order``, those that meet the SLO (x-slo-met)


def failover_order(cands: Sequence[Candidate], profile: Profile, slo_ms: float,
                   slo_margin_ms: float,
                   slo_margins: Mapping[str, float] | None = None) -> list[Candidate]:
    return ranked(cands, profile, slo_ms, slo_margin_ms, slo_margins)[0]


# id(row) -> (the row, every filter keeps it, the hard ones do); the row is held so that its
# id is not reused while kept
Verdicts = dict[int, tuple[Candidate, bool, bool]]


class RankMemo:
    """Each row's filter verdicts at each SLO ``ranked`` was asked for, kept from one compile
    of a region to the next: a filter is a pure function of the row and the call
    (``Filter.reject(c, ctx)``), and between two publishes most of a region's rows are
    unchanged, so a compile asks the filters only about rows that changed. At 10,000 rows
    and 7 SLO classes, the pipeline over every row at every class was most of a region's
    compile. Rows are known by identity: the compile hands the same ``Candidate`` object
    for an unchanged row (``resources.CompileCache``); a new object is a new row. A round
    (one compile) keeps only the verdicts it used."""

    def __init__(self) -> None:
        self._kept: dict[tuple[object, ...], Verdicts] = {}
        self._used: dict[tuple[object, ...], Verdicts] = {}
        # id(rows) -> (rows, their indexes by (cost, p95, id), by (latency, id)): one sort
        # per table and round (neither key depends on the SLO), then filtered per SLO
        self._sorted: dict[int, tuple[Sequence[Candidate], list[int], list[int]]] = {}
        self.asked = 0  # rows the filters were run on, for tests and benchmarks

    def sorted_rows(self, cands: Sequence[Candidate], ctx: CallContext
                    ) -> tuple[list[int], list[int]]:
        got = self._sorted.get(id(cands))
        if got is None or got[0] is not cands:
            n = range(len(cands))
            got = self._sorted[id(cands)] = (
                cands,
                sorted(n, key=lambda i: (cands[i].cost_usd, cands[i].latency_p95_ms,
                                         cands[i].deployment_id)),
                sorted(n, key=lambda i: (ctx.latency_ms(cands[i]), cands[i].deployment_id)))
        return got[1], got[2]

    def tables(self, profile: Profile, slo_ms: float, slo_margin_ms: float,
               slo_margins: Mapping[str, float]) -> tuple[Verdicts, Verdicts]:
        """(verdicts kept from the last round, this round's) at one SLO."""
        key = (profile, slo_ms, slo_margin_ms, tuple(sorted(slo_margins.items())))
        used = self._used.get(key)
        if used is None:
            used = self._used[key] = {}
        return self._kept.get(key, {}), used

    def end_round(self) -> None:
        self._kept, self._used = self._used, {}
        self._sorted.clear()


def ranked(cands: Sequence[Candidate], profile: Profile, slo_ms: float,
           slo_margin_ms: float, slo_margins: Mapping[str, float] | None = None,
           memo: RankMemo | None = None) -> tuple[list[Candidate], frozenset[str]]:
    """The failover order at ``slo_ms`` and which of it every filter keeps (served by one of
    those, a call is not a best effort: the Python edge's ``slo_met``). ``slo_margins``:
    deployment -> ms learned from this class's misses (``placement.feedback``). ``memo``:
    verdicts of earlier compiles (the same answer, the filters run on changed rows only)."""
    ctx = CallContext(Hints(slo_ms=slo_ms), slo_margin_ms, slo_margins=slo_margins or {})
    if memo is not None:
        return _ranked_memo(cands, profile, ctx, memo)
    feasible = [v.candidate for v in profile.explain(cands, ctx) if v.feasible]
    chosen = frozenset(c.deployment_id for c in feasible)
    fallback = [c for c in cands if c.deployment_id not in chosen
                and all(f.reject(c, ctx) is None for f in profile.hard_filters)]
    return servers_apart(
        sorted(feasible, key=lambda c: (c.cost_usd, c.latency_p95_ms, c.deployment_id))
        + sorted(fallback, key=lambda c: (ctx.latency_ms(c), c.deployment_id))), chosen


def _ranked_memo(cands: Sequence[Candidate], profile: Profile, ctx: CallContext,
                 memo: RankMemo) -> tuple[list[Candidate], frozenset[str]]:
    """``ranked`` from kept verdicts and the round's sorts of the rows: the same order, as
    the sorts are stable and neither key reads the SLO or its margins (``latency_ms`` of a
    call without in-flight or observed latencies is the row's own)."""
    kept, used = memo.tables(profile, ctx.hints.slo_ms, ctx.slo_margin_ms, ctx.slo_margins)
    status: list[tuple[bool, bool]] = []
    for c in cands:
        v = used.get(id(c)) or kept.get(id(c))
        if v is not None and v[0] is c:
            used[id(c)] = v
        else:
            memo.asked += 1
            keeps = all(f.reject(c, ctx) is None for f in profile.filters)
            v = used[id(c)] = (c, keeps, keeps or all(f.reject(c, ctx) is None
                                                       for f in profile.hard_filters))
        status.append((v[1], v[2]))
    by_cost, by_latency = memo.sorted_rows(cands, ctx)
    feasible = [cands[i] for i in by_cost if status[i][0]]
    chosen = frozenset(c.deployment_id for c in feasible)
    fallback = [cands[i] for i in by_latency if not status[i][0] and status[i][1]
                and cands[i].deployment_id not in chosen]
    return servers_apart(feasible + fallback), chosen


def servers_apart(order: Sequence[Candidate]) -> list[Candidate]:
    """Each server's first deployment in order, then the other variants on those servers.

    Envoy retries (UNAVAILABLE, resets, refused connections: server failures) go to the
    next deployment in the order; a Python edge excludes every variant on a server that
    failed for the rest of the call, so another variant on the same server should not be
    next. It stays in the order, last, for when nothing else is left."""
    seen: set[str] = set()
    first: list[Candidate] = []
    later: list[Candidate] = []
    for c in order:
        (later if c.backend_id in seen else first).append(c)
        seen.add(c.backend_id)
    return first + later


def slo_classes(cands: Sequence[Candidate], profile: Profile,
                slo_margin_ms: float, memo: RankMemo | None = None) -> list[SloClass]:
    """Ranges of whole-ms SLOs covering [0, ∞), each with its own failover order."""
    ctx = CallContext(Hints(slo_ms=0.0), slo_margin_ms)
    points = sorted({0} | {max(0, math.ceil(ctx.latency_ms(c) + slo_margin_ms))
                           for c in cands if math.isfinite(ctx.latency_ms(c))})
    found: list[tuple[int, tuple[str, ...], frozenset[str]]] = []
    for p in points:
        ranks, feasible = ranked(cands, profile, p, slo_margin_ms, memo=memo)
        order = tuple(c.deployment_id for c in ranks)
        if not found or found[-1][1:] != (order, feasible):
            found.append((p, order, feasible))
    return [SloClass(lo, found[i + 1][0] if i + 1 < len(found) else None, order, feasible)
            for i, (lo, order, feasible) in enumerate(found)]


@dataclass(frozen=True)
class ClassDemand:
    """What placement knows of one class of calls at one edge when it compiles a push."""

    key: Hashable
    cands: Sequence[Candidate]
    slo_ms: float
    rate: float = 0.0  # calls/s the edge sent the class (its access log)
    margins: Mapping[str, float] = field(default_factory=dict)  # learned from its misses


@dataclass(frozen=True)
class WeightedOrder:
    """A class's failover order, which of it meets the SLO, and the rotations of the order
    to split its calls over, with their weights (empty: the order alone)."""

    order: tuple[str, ...]
    feasible: frozenset[str]
    rotations: tuple[tuple[float, tuple[str, ...]], ...] = ()
    # calls in flight the plan expects through each of the class's aggregates (by the first
    # deployment of its rotation; None: the order alone), at the rate it was split for:
    # what the aggregate's retry budget is sized by (``clusters.retry_concurrency``)
    inflight: Mapping[str | None, float] = field(default_factory=dict)


def rotations(order: Sequence[str], fractions: Mapping[str, float]
              ) -> tuple[tuple[float, tuple[str, ...]], ...]:
    """One order per deployment with a fraction: it first, then ``order`` without it (so a
    retry anywhere goes to the first of ``order`` not yet tried). Empty when the whole
    class goes to ``order[0]`` anyway."""
    out = tuple((fractions[d], (d, *(x for x in order if x != d)))
                for d in order if fractions.get(d, 0.0) > 0)
    if len(out) <= 1 and (not out or out[0][1][0] == (order[0] if order else None)):
        return ()
    return out


def warm_plain(w: WeightedOrder, warming: Mapping[str, float]) -> WeightedOrder:
    """A class compiled to its order alone (no rate learned) whose first deployment is
    warming (``services.xds.returns``): that deployment first for its share of the calls,
    the rest to the order's first deployment not warming (``rotations``: a retry anywhere
    goes to the first of the order not yet tried). As is when nothing else is in the order
    or its first deployment is not warming."""
    if not w.order or w.rotations or w.order[0] not in warming:
        return w
    rest = next((d for d in w.order if d not in warming), None)
    if rest is None:
        return w
    share = warming[w.order[0]]
    return WeightedOrder(w.order, w.feasible,
                         rotations(w.order, {w.order[0]: share, rest: 1.0 - share}),
                         w.inflight)


def reachable(order: Sequence[str],
              rots: Sequence[tuple[float, Sequence[str]]] = ()) -> frozenset[str]:
    """The deployments a route's calls can be sent to: its order's and its rotations'."""
    return frozenset(order).union(*(o for _, o in rots))


def capped(w: WeightedOrder, cap: int | None) -> WeightedOrder:
    """``w`` with its order and each rotation cut to their first ``cap`` deployments (None:
    as is), and its feasible set to what they still reach. A call tries at most the route's
    attempts, fewer than ``cap`` (``EnvoySettings.cap``), so no call loses a deployment it
    could have reached, and a cut order is a prefix of one already filtered for its class:
    nothing a call's hints exclude can enter (what Envoy routes on is the SLO; the other
    hints go to the slow path, which does not read these orders)."""
    if cap is None or (len(w.order) <= cap and all(len(o) <= cap for _, o in w.rotations)):
        return w
    order = w.order[:cap]
    rots = tuple((f, o[:cap]) for f, o in w.rotations)
    return WeightedOrder(order, w.feasible & reachable(order, rots), rots, w.inflight)


def weighted(demands: Sequence[ClassDemand], profile: Profile, slo_margin_ms: float,
             reserved: Mapping[str, float] | None = None,
             tail: float = queueing.TAIL, memo: RankMemo | None = None,
             spread_cap: int | None = None, warming: Mapping[str, float] | None = None
             ) -> dict[Hashable, WeightedOrder]:
    """Every class of one edge, compiled together (they share the edge's slot shares):
    the order with the learned margins, and its split (``placement.splits``). A class of
    rate ``splits.UNKNOWN`` is split over its first ``spread_cap`` feasible deployments
    (None: all) by their room. ``warming``: deployments back from being unusable -> their
    slow-start share (``services.xds.returns``)."""
    found: dict[Hashable, tuple[tuple[str, ...], frozenset[str]]] = {}
    wants: list[Demand] = []
    seen: dict[Hashable, tuple[CallContext, list[Candidate], Mapping[str, float]]] = {}
    for d in demands:
        ranks, feasible = ranked(d.cands, profile, d.slo_ms, slo_margin_ms, d.margins, memo)
        found[d.key] = (tuple(c.deployment_id for c in ranks), feasible)
        ctx = CallContext(Hints(slo_ms=d.slo_ms), slo_margin_ms, slo_margins=d.margins)
        seen[d.key] = (ctx, ranks, d.margins)
        ok = [c for c in ranks if c.deployment_id in feasible]
        if d.rate == UNKNOWN and spread_cap is not None:
            ok = ok[:spread_cap]
        rest = [c for c in ranks[:spread_cap] if c.deployment_id not in feasible]
        wants.append(Demand(d.key, d.slo_ms - slo_margin_ms, d.rate, ok,
                            {c.deployment_id: ctx.latency_ms(c)
                             + d.margins.get(c.deployment_id, 0.0) for c in ok}, rest))
    fractions = split(wants, reserved, tail, warming)
    rates = {d.key: d.rate * RATE_HEADROOM for d in demands
             if d.rate != UNKNOWN and d.rate > 0}
    out: dict[Hashable, WeightedOrder] = {}
    for k, (order, feasible) in found.items():
        rots = rotations(order, fractions.get(k, {}))
        out[k] = WeightedOrder(order, feasible, rots,
                               _inflight(order, rots, rates.get(k, 0.0), *seen[k]))
        if warming and not fractions.get(k):  # no rate to split: the order, ramped
            out[k] = warm_plain(out[k], warming)
    return out


def _inflight(order: Sequence[str], rots: Sequence[tuple[float, Sequence[str]]], rate: float,
              ctx: CallContext, ranks: Sequence[Candidate], margins: Mapping[str, float]
              ) -> dict[str | None, float]:
    """Calls in flight through each aggregate of a class split ``rots`` (none: its order
    takes them all) at ``rate`` calls/s: each aggregate's share of the rate times the p95
    (with the learned margin) of the deployment its calls go to first (Little's law, on the
    safe side)."""
    if rate <= 0 or not order:
        return {}
    firsts = {o[0] for _, o in rots} or {order[0]}
    seconds = {c.deployment_id: (ctx.latency_ms(c) + margins.get(c.deployment_id, 0.0)) / 1e3
               for c in ranks if c.deployment_id in firsts}
    seconds = {d: x if math.isfinite(x) else 0.0 for d, x in seconds.items()}
    if not rots:
        return {None: rate * seconds.get(order[0], 0.0)}
    return {o[0]: rate * w * seconds.get(o[0], 0.0) for w, o in rots}
