"""A tighter offline bound: the LP with each pool's queueing at the SLO's percentile.

The fluid LP (``lp.py``) calls a deployment feasible when ``rtt + mean service <= SLO`` and
never queues, so "× LP" overstates what any router can reach. This bound still knows the
whole trace and still splits calls fractionally, but a call counts as met only with the
*probability* that its latency fits its SLO at the utilisation its pool runs at:

    q(e, k, d, ρ) = P(rtt(e, d) + W(ρ) + S_d <= slo(k))

with ``S_d`` the deployment's service time (lognormal, mean ``s(d)``, the scenario's σ) and
``W(ρ)`` the wait of an M/G/c queue (``c`` = the pool's servers) at utilisation ``ρ``,
Allen–Cunneen: ``P(W > 0)`` is Erlang C, and a positive wait is exponential with mean
``s_min / (c (1 − ρ)) × (1 + cs²) / 2`` (``cs² = exp(σ²) − 1``, Poisson arrivals). ``s_min`` is
the pool's *quickest* variant, so waits are never overstated (the bound stays a bound of
this model).

A pool runs at one of the utilisation levels ``LEVELS`` (up to ``lp_utilisation_cap``) and may
time-share between them within a bucket (``z[b, p, l]``: the fraction of the bucket at level
``l``; a relaxation of picking one level per bucket):

    minimise    Σ x[b,e,k,d,l] · price_s(d) · s(d)
    subject to  Σ_{d,l} x[b,e,k,d,l] + u[b,e,k] = n[b,e,k]
                Σ_{(e,k,d) on p} x[b,e,k,d,l] · s(d) <= ρ_l · servers(p) · B · z[b,p,l]
                Σ_l z[b,p,l] <= up(p, b)
                Σ q(e,k,d,ρ_l) · x[b,e,k,d,l] >= A · N

Buckets are ``max(lp_bucket_s, MIN_BUCKET_S)`` long, cut at every outage's start and end
(no bucket is partly down: the fluid LP's partly-up buckets let calls use a pool at a moment
it is down). The steady-state queue per bucket is an approximation (a burst's first seconds queue more,
its tail less), so a policy can land below this bound by luck or by the model's error;
``attainment`` here is expected attainment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, vstack
from scipy.special import ndtr

from benchmarks.costsim import lp
from benchmarks.costsim.engine import deployments_of
from benchmarks.costsim.lp import UNPLACED_PENALTY, LpPoint
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import Trace, outage_windows

LEVELS = (0.4, 0.6, 0.75)  # plus the scenario's lp_utilisation_cap on top
MIN_BUCKET_S = 60.0  # coarser than the fluid LP's buckets: 4 levels per pool cost variables
_Z = np.linspace(-6.0, 6.0, 241)  # quadrature over the service-time noise
_W = np.exp(-_Z ** 2 / 2)
_W /= _W.sum()


def erlang_c(c: int, rho: float) -> float:
    """P(an arrival waits) in M/M/c at utilisation ``rho`` (Erlang B recursion, stable)."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return 1.0
    a, b = c * rho, 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1 - rho * (1 - b))


def p_within(budget_ms: float, mean_ms: float, sigma: float, servers: int, rho: float,
             wait_service_ms: float) -> float:
    """``P(W + S <= budget)``: S lognormal (mean ``mean_ms``), W the M/G/c wait above."""
    if budget_ms <= 0:
        return 0.0
    s = mean_ms * np.exp(sigma * _Z - sigma ** 2 / 2)
    p_wait = erlang_c(servers, rho)
    if p_wait <= 0:
        return float(ndtr((math.log(budget_ms / mean_ms) + sigma ** 2 / 2) / sigma)) \
            if sigma > 0 else float(mean_ms <= budget_ms)
    cs2 = math.exp(sigma ** 2) - 1
    m = wait_service_ms / (servers * (1 - rho)) * (1 + cs2) / 2
    slack = budget_ms - s
    fits = slack >= 0
    no_wait = float(_W[fits].sum())
    with_wait = float((_W * np.where(fits, 1 - np.exp(-np.maximum(slack, 0) / m), 0)).sum())
    return (1 - p_wait) * no_wait + p_wait * with_wait


@dataclass
class QModel:
    c: np.ndarray
    a_eq: coo_matrix
    b_eq: np.ndarray
    a_ub: coo_matrix  # capacity rows, time rows, then the attainment row (last)
    b_ub: np.ndarray
    q: np.ndarray  # per variable: probability its call meets its SLO
    billed: np.ndarray
    unplaced: np.ndarray
    total_calls: int


def build(s: Scenario, trace: Trace) -> QModel:
    st = s.settings
    bucket_s = max(st.lp_bucket_s, MIN_BUCKET_S)
    levels = (*LEVELS, st.lp_utilisation_cap)
    cuts = _cuts(s, trace.duration_s, bucket_s)
    nb = len(cuts) - 1
    length = np.diff(cuts)
    deps, edges, classes, catalog = deployments_of(s), trace.regions, s.classes(), s.catalog()
    npool, nl = len(s.pools), len(levels)
    quickest = [min(s.variant(v).compute_ms / p.speed for v in p.variants) for p in s.pools]
    # (edge, class) -> [(deployment, [(level, q)])]: levels where a lower one buys attainment.
    options: dict[tuple[int, int], list[tuple[int, list[tuple[int, float]]]]] = {}
    for ei, e in enumerate(edges):
        for ki, k in enumerate(classes):
            opts = []
            for di, d in enumerate(deps):
                spec = s.variant(d.variant)
                if spec.model != k.model or spec.quality < k.min_quality:
                    continue
                pool = s.pools[d.backend]
                budget = k.slo_ms - catalog.rtt(e, d.region)
                qs = [p_within(budget, d.mean_service_s * 1000, pool.sigma(st),
                               pool.servers, rho, quickest[d.backend]) for rho in levels]
                kept = [(nl - 1, qs[-1])]
                for li in range(nl - 2, -1, -1):
                    if qs[li] > kept[-1][1] + 1e-4:
                        kept.append((li, qs[li]))
                opts.append((di, kept))
            options[(ei, ki)] = opts
    bk = np.clip(np.searchsorted(cuts, trace.t, side="right") - 1, 0, nb - 1)
    keys, counts = np.unique(np.stack([bk, trace.region, trace.klass], axis=1), axis=0,
                             return_counts=True)
    cost, q, billed, unplaced = [], [], [], []
    eq_r, eq_c, cap_r, cap_c, cap_v = [], [], [], [], []
    for row, (b, e, k) in enumerate(keys.tolist()):
        for di, kept in options[(e, k)]:
            d = deps[di]
            for li, qv in kept:
                v = len(cost)
                cost.append(d.usd_per_s * d.mean_service_s)
                billed.append(cost[-1])
                q.append(qv)
                unplaced.append(False)
                eq_r.append(row)
                eq_c.append(v)
                cap_r.append((b * npool + d.backend) * nl + li)
                cap_c.append(v)
                cap_v.append(d.mean_service_s)
        v = len(cost)
        cost.append(UNPLACED_PENALTY)
        billed.append(0.0)
        q.append(0.0)
        unplaced.append(True)
        eq_r.append(row)
        eq_c.append(v)
    nx = len(cost)
    nz = nb * npool * nl  # z[b, p, l], after the x variables
    up = _up(s, trace.duration_s, cuts)
    z_cap_v = [-levels[li] * s.pools[p].servers * length[b]
               for b in range(nb) for p in range(npool) for li in range(nl)]
    cap = coo_matrix((np.concatenate([cap_v, z_cap_v]),
                      (np.concatenate([cap_r, np.arange(nz)]),
                       np.concatenate([cap_c, nx + np.arange(nz)]))), shape=(nz, nx + nz))
    time_rows = coo_matrix((np.ones(nz), (np.arange(nz) // nl, nx + np.arange(nz))),
                           shape=(nb * npool, nx + nz))
    q_arr = np.array(q)
    att = coo_matrix((-q_arr[q_arr > 0], (np.zeros(int((q_arr > 0).sum()), dtype=int),
                                          np.nonzero(q_arr > 0)[0])), shape=(1, nx + nz))
    a_ub = vstack([cap, time_rows, att]).tocoo()
    b_ub = np.concatenate([np.zeros(nz), up.reshape(-1), [0.0]])
    a_eq = coo_matrix((np.ones(len(eq_r)), (eq_r, eq_c)), shape=(len(keys), nx + nz))
    pad = np.zeros(nz)
    return QModel(np.concatenate([cost, pad]), a_eq, counts.astype(float), a_ub, b_ub,
                  np.concatenate([q_arr, pad]), np.concatenate([billed, pad]),
                  np.concatenate([unplaced, np.zeros(nz, dtype=bool)]), int(counts.sum()))


def _cuts(s: Scenario, duration: float, bucket_s: float) -> np.ndarray:
    """Bucket edges: a regular grid plus every outage's start and end, so no bucket is
    partly down (a call that arrives while a pool is down cannot use it)."""
    grid = np.arange(0.0, duration, bucket_s)
    marks = [t for w in outage_windows(s, duration) for t in (w.start_s, w.end_s)
             if 0 < t < duration]
    return np.unique(np.concatenate([grid, marks, [duration]]))


def _up(s: Scenario, duration: float, cuts: np.ndarray) -> np.ndarray:
    up = np.ones((len(cuts) - 1, len(s.pools)))
    index = {p.id: i for i, p in enumerate(s.pools)}
    for w in outage_windows(s, duration):
        inside = (cuts[:-1] >= w.start_s) & (cuts[1:] <= w.end_s)
        for pid in w.pools:
            up[inside, index[pid]] = 0.0
    return up


def solve(m: QModel, attainment: float) -> LpPoint:
    """The cheapest assignment whose expected attainment reaches ``attainment``."""
    return lp.solve(m, attainment)


def max_attainment(m: QModel) -> float:
    """The best expected attainment any assignment reaches under this model."""
    res = linprog(-m.q + 1e-9 * m.c, A_ub=m.a_ub.tocsr()[:-1], b_ub=m.b_ub[:-1],
                  A_eq=m.a_eq.tocsr(), b_eq=m.b_eq, bounds=(0, None), method="highs")
    return float(m.q @ res.x) / m.total_calls if res.status == 0 else 0.0
