"""What one edge region's routes send each class of call: the orders, SLO classes and splits.

``compile_region`` (``resources.py``) turns this plan into Envoy resources; the cost
simulator's Envoy row (``benchmarks/costsim/envoy_policy.py``) runs the same plan per push
and routes its simulated calls by it, and ``learning.py`` classes the access log's entries
by it. One implementation, so what the simulator measures is what placement pushes:

- per model, the SLO classes of ``order.slo_classes`` (ranges of whole-ms SLOs with their
  own failover order) and the model's default SLO's route;
- per class, what placement learned of it (``placement.edge_learning.Learned``): calls are
  learned by ``(model, the call's whole-ms SLO)`` (``None``: no SLO, the default route), not
  by the range they matched, whose ends move with every latency estimate (a key by range
  scattered one steady class over dozens of keys, none with its rate); a class's rate is the
  sum over the SLOs in its range, compiled by ``order.weighted`` into its order and weighted
  rotations at the tightest SLO in the range still called (never looser than any call it
  matched; the range's lower end when it had none), with that SLO's miss margins;
- a range is cut at a called SLO whose learned margins give it another order or feasible
  set than the tighter SLOs before it (``_sub_ranges``): one route per such SLO class, so the
  misses of a tight class do not move a loose one that shares its range;
- with ``cold_spread`` (off: ``compile_region`` does not ask for it, measured only by the
  cost simulator's ``--what-if`` row ``envoy-cold-spread``), while placement has learned no
  rate at all of the region (a cold start: a new Envoy, a restarted placement), every
  route's rate is ``splits.UNKNOWN``: its calls are split over its first ``cap`` feasible
  deployments by the room each has for the edge, not all sent to the cheapest; from the
  first learned rate on, routes nothing was learned for keep their order alone. Off because
  a fresh Envoy's first calls would then go to a random feasible deployment, not the
  cheapest (what the integration tests, e.g. ``test_envoy_edge``'s loose call, assert);
- a deployment placement saw come back (``Learned.warming``, ``services.xds.returns``) takes
  its slow-start share of what its classes' splits would give it (``placement.splits``); a
  class with no rate learned whose order starts with it sends it that share and the rest
  to the order's first deployment not warming (``order.warm_plain``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from placement.edge_learning import Learned
from placement.model import Candidate
from placement.pipeline import Profile
from placement.splits import UNKNOWN
from services.xds.order import (
    ClassDemand,
    RankMemo,
    SloClass,
    WeightedOrder,
    capped,
    ranked,
    reachable,
    slo_classes,
    warm_plain,
    weighted,
)
from services.xds.routes import ModelRoutes

Key = tuple[str, int | None]  # (model, a call's whole-ms SLO or None): ``Learned``'s keys
ACTIVE_RATE = 0.01  # calls/s: an SLO whose calls have (almost) stopped no longer tightens


@dataclass(frozen=True)
class Table:
    """One model's candidates for the region, as placement pushed them."""

    cands: Sequence[Candidate]
    default_slo_ms: float


@dataclass(frozen=True)
class Route:
    """The route a call matched: its class (``None``: the default route), the key it is
    learned under, the SLO its margins are kept at (its own whole-ms SLO, or the model's
    default), and where it goes."""

    index: int | None
    key: Key
    slo_ms: float
    order: tuple[str, ...]
    rotations: tuple[tuple[float, tuple[str, ...]], ...]


def _demand(model: str, i: int | None, lo: float, hi: float | None, table: Table,
            learned: Learned) -> ClassDemand:
    """A route's class of calls: the learned SLOs it matches (the default route: calls
    without one), their summed rate, compiled at the tightest of them that is still called."""
    keys: list[tuple[float, Hashable]] = []
    for key in learned.rates:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == model):
            continue
        slo = key[1]
        if i is None and slo is None:
            keys.append((lo, key))
        elif i is not None and isinstance(slo, int) and lo <= slo and (hi is None or slo < hi):
            keys.append((float(slo), key))
    rate = sum(learned.rates[k] for _, k in keys)
    active = [(s, k) for s, k in keys if learned.rates[k] >= ACTIVE_RATE] or keys
    slo, key = min(active, key=lambda x: x[0]) if active else (lo, None)
    return ClassDemand((model, i), table.cands, slo, rate, learned.margins.get(key, {}))


def _sub_ranges(model: str, k: SloClass, table: Table, learned: Learned, profile: Profile,
                slo_margin_ms: float, memo: RankMemo | None = None
                ) -> list[tuple[int, int | None]]:
    """``k``'s range, cut at each called SLO in it whose order with its learned margins
    differs from the one the part before it is compiled to."""
    called = sorted({key[1] for key, r in learned.rates.items()
                     if isinstance(key, tuple) and len(key) == 2 and key[0] == model
                     and isinstance(key[1], int) and r >= ACTIVE_RATE
                     and k.lo <= key[1] and (k.hi is None or key[1] < k.hi)})
    if len(called) < 2 and not (called and called[0] > k.lo):
        return [(k.lo, k.hi)]
    cuts = [k.lo]
    at = called[0]  # the part [cuts[-1], next cut) is compiled at its tightest called SLO
    last = ranked(table.cands, profile, at, slo_margin_ms, learned.margins.get((model, at)),
                  memo)
    for slo in called[1:]:
        got = ranked(table.cands, profile, slo, slo_margin_ms,
                     learned.margins.get((model, slo)), memo)
        if got != last:
            cuts.append(slo)
            last = got
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], k.hi], strict=True)]


def plan_region(tables: Mapping[str, Table], profile: Profile, slo_margin_ms: float,
                learned: Learned | None = None, memo: RankMemo | None = None,
                cap: int | None = None, cold_spread: bool = False) -> dict[str, ModelRoutes]:
    """Every model's routes for one region, its classes compiled together (they share the
    edge's slot shares). ``memo``: the region's filter verdicts from its earlier compiles
    (``order.RankMemo``: the same plan, the filters run on the rows that changed only).
    ``cap``: each order and rotation keeps its first ``cap`` deployments (``order.capped``,
    ``EnvoySettings.cap``; None: all), the prices only the deployments some route reaches.
    ``cold_spread``: with no rate learned of the region, routes split by room (module
    docstring)."""
    learned = learned or Learned()
    cold = cold_spread and not learned.rates
    found: list[tuple[str, Table, list[SloClass]]] = []
    demands: list[ClassDemand] = []
    plain: dict[Hashable, WeightedOrder] = {}
    for model, table in tables.items():
        classes = [SloClass(a, b, k.order, k.feasible)
                   for k in slo_classes(table.cands, profile, slo_margin_ms, memo)
                   for a, b in _sub_ranges(model, k, table, learned, profile, slo_margin_ms,
                                           memo)]
        found.append((model, table, classes))
        d = _demand(model, None, table.default_slo_ms, None, table, learned)
        demands.append(dataclasses.replace(d, rate=UNKNOWN) if cold else d)
        for i, k in enumerate(classes):
            d = _demand(model, i, k.lo, k.hi, table, learned)
            if cold:
                demands.append(dataclasses.replace(d, rate=UNKNOWN))
            elif d.rate > 0 or d.margins:
                demands.append(d)
            else:  # nothing learned: the range's order as slo_classes ranked it at k.lo
                plain[(model, i)] = WeightedOrder(k.order, k.feasible)
    warm = learned.warming
    compiled: dict[Hashable, WeightedOrder] = {
        k: capped(w, cap) for k, w in
        {**{k: warm_plain(w, warm) for k, w in plain.items()},
         **weighted(demands, profile, slo_margin_ms, learned.reserved, memo=memo,
                    spread_cap=cap, warming=warm)}.items()}
    models: dict[str, ModelRoutes] = {}
    for model, table, classes in found:
        default = compiled[(model, None)]
        ks = [compiled[(model, i)] for i in range(len(classes))]
        sent = reachable(default.order, default.rotations).union(
            *(reachable(w.order, w.rotations) for w in ks))
        models[model] = ModelRoutes(
            default.order, tuple(SloClass(k.lo, k.hi, w.order, w.feasible)
                                 for k, w in zip(classes, ks, strict=True)),
            default.feasible, table.default_slo_ms,
            {c.deployment_id: c.cost_usd for c in table.cands if c.deployment_id in sent},
            {i: w.rotations for i, w in [(None, default), *enumerate(ks)] if w.rotations},
            {i: w.inflight for i, w in [(None, default), *enumerate(ks)] if w.inflight})
    return models


def route(models: Mapping[str, ModelRoutes], model: str, slo_ms: int | None) -> Route | None:
    """The route a call to ``model`` with whole-ms SLO ``slo_ms`` (None: no SLO header)
    matches, as Envoy matches the routes ``routes.py`` builds; None for a model the routes
    do not serve (or a call without SLO to a model without a default SLO)."""
    m = models.get(model)
    if m is None:
        return None
    if slo_ms is not None:
        for i, k in enumerate(m.classes):
            if k.lo <= slo_ms and (k.hi is None or slo_ms < k.hi):
                return Route(i, (model, slo_ms), float(slo_ms), k.order, m.rotations.get(i, ()))
    if m.default_slo_ms is None:
        return None
    return Route(None, (model, None), m.default_slo_ms, m.default, m.rotations.get(None, ()))
