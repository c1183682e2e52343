"""The offline lower bound: a linear program over the same trace, with full knowledge.

The trace is cut into buckets of ``lp_bucket_s``. For every bucket ``b``, edge region ``e``
and call class ``k``, ``n[b,e,k]`` calls (the trace's own counts) are split over the
deployments ``d`` that may serve them (the variant belongs to the model and meets the
class's quality floor):

    minimise    Σ x[b,e,k,d] · price_s(d) · s(d)                   (expected cost)
    subject to  Σ_d x[b,e,k,d] + u[b,e,k] = n[b,e,k]               (every call placed)
                Σ_{e,k,d ∈ pool} x · s(d) <= cap · servers(pool) · B · up(pool, b)
                Σ_{feasible (e,k,d)} x >= A · N                    (SLO attainment)

with ``s(d)`` the deployment's mean service time, ``up`` the fraction of the bucket the pool
is not in an outage, ``cap`` = ``lp_utilisation_cap``, and ``(e,k,d)`` *feasible* when
``rtt(e, region(d)) + s(d) <= slo(k)`` — latency with no queueing at all. ``u`` are calls
left unplaced (only when capacity runs out; penalised, never billed).

It is a *fluid* bound: it knows the whole trace, splits calls fractionally, never queues,
and bills mean service time. A simulated policy can land below it only by putting calls
where the LP's latency model says they miss (counted in its attainment), by running a pool
above ``cap`` within a bucket (its queue then carries work into the next bucket), or by
service-time luck. ``assignment_check`` tells which of these a policy's actual assignment
did, so the comparison can be read honestly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from benchmarks.costsim.engine import SimResult, deployments_of
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import Trace, outage_windows

UNPLACED_PENALTY = 1.0  # USD per call left unplaced: far above any real per-call cost


@dataclass
class LpModel:
    c: np.ndarray
    a_eq: coo_matrix
    b_eq: np.ndarray
    a_ub: coo_matrix  # capacity rows, then one attainment row (last)
    b_ub: np.ndarray
    feasible: np.ndarray  # per variable: counts towards attainment
    billed: np.ndarray  # per variable: expected cost per call (0 for unplaced)
    keys: list[tuple[int, int, int, int]]  # (bucket, edge, class, deployment or -1)
    total_calls: int

    @property
    def unplaced(self) -> np.ndarray:
        return np.array([k[3] == -1 for k in self.keys])


@dataclass(frozen=True)
class LpPoint:
    attainment: float  # the constraint A
    cost_per_million: float  # expected cost per placed call × 1e6
    unplaced: float
    status: str


def _up_fraction(s: Scenario, duration: float, bucket_s: float, nb: int) -> np.ndarray:
    up = np.ones((nb, len(s.pools)))
    pool_index = {p.id: i for i, p in enumerate(s.pools)}
    for w in outage_windows(s, duration):
        for b in range(nb):
            lo, hi = b * bucket_s, min((b + 1) * bucket_s, duration)
            overlap = max(0.0, min(hi, w.end_s) - max(lo, w.start_s))
            for pid in w.pools:
                up[b, pool_index[pid]] -= overlap / (hi - lo)
    return np.clip(up, 0.0, 1.0)


def pair_feasible(s: Scenario) -> dict[tuple[str, int, int], bool]:
    """(edge, class, deployment) → allowed-and-latency-feasible; missing = not allowed."""
    catalog, classes, deps = s.catalog(), s.classes(), deployments_of(s)
    out = {}
    for e in sorted(s.regions):
        for ki, k in enumerate(classes):
            for di, d in enumerate(deps):
                spec = s.variant(d.variant)
                if spec.model != k.model or spec.quality < k.min_quality:
                    continue
                out[(e, ki, di)] = (catalog.rtt(e, d.region) + d.mean_service_s * 1000
                                    <= k.slo_ms)
    return out


def build(s: Scenario, trace: Trace) -> LpModel:
    bucket_s = s.settings.lp_bucket_s
    nb = max(1, int(np.ceil(trace.duration_s / bucket_s)))
    deps, edges = deployments_of(s), trace.regions
    bk = np.minimum((trace.t // bucket_s).astype(int), nb - 1)
    keys_arr, n_arr = np.unique(np.stack([bk, trace.region, trace.klass], axis=1), axis=0,
                                return_counts=True)
    counts = {tuple(int(v) for v in k): int(n) for k, n in zip(keys_arr, n_arr, strict=True)}
    feas = pair_feasible(s)
    by_ek: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for (e, ki, di), ok in feas.items():
        by_ek.setdefault((edges.index(e), ki), []).append((di, ok))
    up = _up_fraction(s, trace.duration_s, bucket_s, nb)
    keys, cost, feasible, billed = [], [], [], []
    eq_r, eq_c, cap_r, cap_c, cap_v = [], [], [], [], []
    b_eq = []
    for row, ((b, e, k), n) in enumerate(sorted(counts.items())):
        b_eq.append(n)
        for di, ok in by_ek.get((e, k), []):
            d = deps[di]
            v = len(keys)
            keys.append((b, e, k, di))
            billed.append(d.usd_per_s * d.mean_service_s)
            cost.append(billed[-1])
            feasible.append(ok)
            eq_r.append(row)
            eq_c.append(v)
            cap_r.append(b * len(s.pools) + d.backend)
            cap_c.append(v)
            cap_v.append(d.mean_service_s)
        v = len(keys)
        keys.append((b, e, k, -1))
        billed.append(0.0)
        cost.append(UNPLACED_PENALTY)
        feasible.append(False)
        eq_r.append(row)
        eq_c.append(v)
    nv = len(keys)
    cap = s.settings.lp_utilisation_cap
    b_cap = np.array([cap * s.pools[p].servers * bucket_s * up[b, p]
                      for b in range(nb) for p in range(len(s.pools))])
    feas_arr = np.array(feasible)
    att_c = np.nonzero(feas_arr)[0]
    rows = np.concatenate([np.array(cap_r), np.full(len(att_c), nb * len(s.pools))])
    cols = np.concatenate([np.array(cap_c), att_c])
    vals = np.concatenate([np.array(cap_v), -np.ones(len(att_c))])
    a_ub = coo_matrix((vals, (rows, cols)), shape=(nb * len(s.pools) + 1, nv))
    a_eq = coo_matrix((np.ones(len(eq_r)), (eq_r, eq_c)), shape=(len(counts), nv))
    return LpModel(np.array(cost), a_eq, np.array(b_eq, dtype=float), a_ub,
                   np.concatenate([b_cap, [0.0]]), feas_arr, np.array(billed), keys,
                   int(sum(counts.values())))


class CostModel(Protocol):
    """What :func:`solve` needs of a model: this LP's, or the queueing bound's."""

    c: np.ndarray
    a_eq: coo_matrix
    b_eq: np.ndarray
    a_ub: coo_matrix  # the attainment row last
    b_ub: np.ndarray
    billed: np.ndarray
    total_calls: int

    @property
    def unplaced(self) -> np.ndarray: ...


def solve(m: CostModel, attainment: float) -> LpPoint:
    """The cheapest assignment that reaches ``attainment`` (billed cost per 1M placed calls)."""
    b_ub = m.b_ub.copy()
    b_ub[-1] = -attainment * m.total_calls
    res = linprog(m.c, A_ub=m.a_ub.tocsr(), b_ub=b_ub, A_eq=m.a_eq.tocsr(), b_eq=m.b_eq,
                  bounds=(0, None), method="highs")
    if res.status != 0:
        return LpPoint(attainment, float("nan"), float("nan"), res.message)
    x = res.x
    unplaced = float(x[m.unplaced].sum())
    placed = m.total_calls - unplaced
    return LpPoint(attainment, float(m.billed @ x) / placed * 1e6 if placed else float("nan"),
                   unplaced, "optimal")


def max_attainment(m: LpModel) -> float:
    """The best attainment any assignment reaches under the LP's model."""
    res = linprog(-m.feasible.astype(float) + 1e-9 * m.c, A_ub=m.a_ub.tocsr()[:-1],
                  b_ub=m.b_ub[:-1], A_eq=m.a_eq.tocsr(), b_eq=m.b_eq, bounds=(0, None),
                  method="highs")
    return float(m.feasible.astype(float) @ res.x) / m.total_calls if res.status == 0 else 0.0


@dataclass(frozen=True)
class AssignmentCheck:
    """A policy's actual assignment read with the LP's model."""

    model_attainment: float  # share of calls on LP-feasible (edge, class, deployment)
    expected_cost_per_million: float
    capacity_ok: bool  # no pool above cap × servers × B × up in any bucket
    worst_utilisation: float
    failed: int


def assignment_check(s: Scenario, trace: Trace, r: SimResult) -> AssignmentCheck:
    bucket_s = s.settings.lp_bucket_s
    nb = max(1, int(np.ceil(trace.duration_s / bucket_s)))
    deps = deployments_of(s)
    feas = pair_feasible(s)
    up = _up_fraction(s, trace.duration_s, bucket_s, nb)
    work = np.zeros((nb, len(s.pools)))
    ok_calls, cost = 0, 0.0
    for i in np.nonzero(r.final_dep >= 0)[0]:
        d = deps[int(r.final_dep[i])]
        b = min(int(trace.t[i] // bucket_s), nb - 1)
        work[b, d.backend] += d.mean_service_s
        cost += d.usd_per_s * d.mean_service_s
        ok_calls += feas.get((trace.regions[trace.region[i]], int(trace.klass[i]),
                              int(r.final_dep[i])), False)
    limit = np.array([[s.pools[p].servers * bucket_s * up[b, p] for p in range(len(s.pools))]
                      for b in range(nb)])
    util = np.divide(work, limit, out=np.where(work > 0, np.inf, 0.0), where=limit > 0)
    served = int((r.final_dep >= 0).sum())
    return AssignmentCheck(ok_calls / len(trace) if len(trace) else float("nan"),
                           cost / served * 1e6 if served else float("nan"),
                           bool(np.all(util <= s.settings.lp_utilisation_cap + 1e-9)),
                           float(util.max()) if util.size else 0.0, r.failed)
