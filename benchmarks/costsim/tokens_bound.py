"""Where a token run's money goes, and an offline lower bound on what ≥ 99 % could cost.

``spend``: per deployment pool (a region's GPUs of one accelerator, price class and variant),
the GPU-seconds billed (billed $ / $ per GPU-second), streams, output tokens and $ per 1M
output tokens of one policy's run, counted streams only (after the warm-up).

``lower_bound``: the cheapest any router could serve the same counted streams with at least
``attainment`` of them within both objectives, as a linear programme (scipy HiGHS) over the
simulated servers' true speeds. It **knows** every stream in advance (arrival, region, class,
prompt and output length, its session prefix, its speed noise) and each server's true speed
at the stream's arrival (the scenario's slowdowns included). It is a **lower bound** because
it is optimistic everywhere a real router is not:

- no queueing: a server's prefill and decode are limited only in total over each period
  between slowdowns (``Σ prefill ms ≤ period + spill``, ``Σ decode share ≤ period + spill``,
  ``spill`` the longest a stream within its objectives can last, for streams that arrive in
  one period and run into the next), never per instant, and the streams before the warm-up
  use none of it;
- every session stream's prefix is cached wherever it goes (its prefill is the rest only);
- a stream is eligible on a server when its RTT + its own prefill meets its TTFT objective
  and the server's single-stream decode meets its TPOT objective, at the speed at arrival
  (a stream that would straddle a slowdown keeps the faster speed);
- its decode is billed as if it ran in the largest batch its TPOT objective allows
  (``n*``: ``noise × tpot(n*) = objective``, at most ``max_batch``): a token's share
  ``tpot(n) / n`` falls with ``n`` and is convex, so by Jensen no batch sequence meeting the
  objective on average bills less;
- the ``1 − attainment`` of streams it may miss (it picks them) are billed at their cheapest
  server's full-batch rate and use no capacity;
- fractional: a stream may be split over servers (an LP, not an assignment).

Pure arithmetic over the scenario and streams; no simulation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from benchmarks.common import md_table
from benchmarks.costsim.tokens_workload import Deployment, Streams, TokenScenario
from benchmarks.costsim.tokensim import Outcome


@dataclass(frozen=True, slots=True)
class PoolSpend:
    pool: str
    usd_per_hour: float
    streams: int
    tokens_out: int
    usd: float

    @property
    def gpu_s(self) -> float:
        return self.usd / self.usd_per_hour * 3600.0 if self.usd_per_hour > 0 else 0.0

    @property
    def usd_per_1m_out(self) -> float:
        return self.usd / self.tokens_out * 1e6 if self.tokens_out else math.nan


def pool_of(d: Deployment) -> str:
    """A deployment's pool: its id without the GPU index."""
    return d.id.rsplit(".", 1)[0]


def spend(s: TokenScenario, streams: Streams, out: Outcome) -> list[PoolSpend]:
    """Per pool, what one run billed for its counted streams (dearest first). A moved
    stream's whole cost is on the pool it started on (where the routing chose it)."""
    counted = np.nonzero(streams.t_ms >= s.warmup_s * 1000.0)[0]
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    price: dict[str, float] = {}
    for i in counted:
        d = s.deployments[int(out.deployment[i])]
        a = acc[pool_of(d)]
        a[0] += 1
        a[1] += int(streams.output[i])
        a[2] += float(out.cost_usd[i])
        price[pool_of(d)] = d.usd_per_hour
    rows = [PoolSpend(p, price[p], int(a[0]), int(a[1]), a[2]) for p, a in acc.items()]
    return sorted(rows, key=lambda r: -r.usd)


@dataclass(frozen=True, slots=True)
class Bound:
    usd: float
    tokens_out: int
    streams: int
    missed: int  # streams the bound chose to miss (≤ (1 − attainment) × streams)
    no_server: int  # streams no server could serve within both objectives, even alone
    by_pool: dict[str, float]  # $ per pool in the bound's assignment
    # per SLO class: ($, output tokens) of the bound's assignment (missed streams included)
    by_class: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)

    @property
    def usd_per_1m_out(self) -> float:
        return self.usd / self.tokens_out * 1e6 if self.tokens_out else math.nan


def _periods(s: TokenScenario, end_ms: float) -> list[tuple[float, float]]:
    cuts = sorted({s.warmup_s * 1000.0, end_ms,
                   *(w.at_s * 1000.0 for w in s.slowdowns
                     if s.warmup_s * 1000.0 < w.at_s * 1000.0 < end_ms)})
    return list(itertools.pairwise(cuts))


def _speeds(s: TokenScenario, t_ms: float) -> list[Deployment]:
    """Every deployment as fast as it is at ``t_ms`` (the slowdowns so far applied)."""
    out = []
    for listed in s.deployments:
        d = listed
        for w in s.slowdowns:
            if w.at_s * 1000.0 <= t_ms and d.id.startswith(w.prefix):
                d = d.slowed(w.factor)
        out.append(d)
    return out


def _batch_for(d: Deployment, goal_ms: float) -> float:
    """The largest (real-valued) mean batch whose TPOT meets ``goal_ms`` (0: none)."""
    a = d.accelerator
    base = a.decode_ms * d.variant.decode_factor
    if base > goal_ms:
        return 0.0
    if a.batch_slowdown <= 0:
        return float(a.max_batch)
    return min((goal_ms / base - 1.0) / a.batch_slowdown + 1.0, float(a.max_batch))


def lower_bound(s: TokenScenario, streams: Streams, rtt: np.ndarray,
                attainment: float = 0.99) -> Bound:
    """The LP described in the module docstring. ``rtt[edge, d]``: the simulator's RTTs."""
    counted = np.nonzero(streams.t_ms >= s.warmup_s * 1000.0)[0]
    end = float(streams.t_ms[-1]) + 1.0
    periods = _periods(s, end)
    n_dep = len(s.deployments)
    cols: list[tuple[int, int, float, float, float]] = []  # (stream k, dep, $, prefill, dec)
    cheapest_any = np.full(len(counted), math.inf)
    period_of = np.searchsorted([p[1] for p in periods], streams.t_ms[counted], side="right")
    speeds = [_speeds(s, p[0]) for p in periods]
    for k, i in enumerate(counted):
        deps = speeds[min(int(period_of[k]), len(periods) - 1)]
        cls = s.classes[int(streams.klass[i])]
        noise = float(streams.noise[i])
        uncached = int(streams.prompt[i]) - int(streams.shared[i])
        decoded = max(int(streams.output[i]) - 1, 0)
        edge = int(streams.region[i])
        for d, dep in enumerate(deps):
            usd_ms = dep.usd_per_hour / 3.6e6
            prefill = dep.prefill_ms(uncached) * noise
            full = dep.accelerator.max_batch
            cheapest_any[k] = min(cheapest_any[k], usd_ms * (
                prefill + decoded * noise * dep.tpot_ms(full) / full))
            n_star = _batch_for(dep, cls.tpot_ms / noise)
            if n_star <= 0 or rtt[edge, d] + prefill > cls.ttft_ms:
                continue
            share = decoded * noise * dep.tpot_ms(1) * (
                1.0 + dep.accelerator.batch_slowdown * (n_star - 1.0)) / n_star
            cols.append((k, d, usd_ms * (prefill + share), prefill, share))
    n = len(counted)
    allowed = math.floor((1.0 - attainment) * n + 1e-9)
    no_server = n - len({col[0] for col in cols})
    allowed = max(allowed, no_server)  # those miss whatever a router does
    nx = len(cols)
    # variables: x (one per column), then miss_k per stream
    c = np.concatenate([[col[2] for col in cols], cheapest_any])
    rows, cidx, vals = [], [], []
    for j, (k, *_rest) in enumerate(cols):
        rows.append(k)
        cidx.append(j)
        vals.append(1.0)
    for k in range(n):
        rows.append(k)
        cidx.append(nx + k)
        vals.append(1.0)
    a_eq = coo_matrix((vals, (rows, cidx)), shape=(n, nx + n)).tocsr()
    b_eq = np.ones(n)
    # capacity: per period and deployment, prefill ms and decode share ≤ the period's ms
    urows, ucols, uvals, ub = [], [], [], []
    for j, (k, d, _usd, prefill, share) in enumerate(cols):
        p = min(int(period_of[k]), len(periods) - 1)
        base = 2 * (p * n_dep + d)
        urows += [base, base + 1]
        ucols += [j, j]
        uvals += [prefill, share]
    # a stream that meets its objectives prefills and decodes within ``spill`` of its
    # arrival, so a period's streams may use up to that much of the next period too
    spill = max(s.classes[int(streams.klass[i])].ttft_ms
                + max(int(streams.output[i]) - 1, 0) * s.classes[int(streams.klass[i])].tpot_ms
                for i in counted)
    for p0, p1 in periods:
        ub += [p1 - p0 + spill, p1 - p0 + spill] * n_dep
    n_cap = 2 * len(periods) * n_dep
    urows += [n_cap] * n
    ucols += list(range(nx, nx + n))
    uvals += [1.0] * n
    ub.append(float(allowed))
    a_ub = coo_matrix((uvals, (urows, ucols)), shape=(n_cap + 1, nx + n)).tocsr()
    res = linprog(c, A_ub=a_ub, b_ub=np.array(ub), A_eq=a_eq, b_eq=b_eq,
                  bounds=(0, 1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"token bound LP: {res.message}")
    x = res.x
    by_pool: dict[str, float] = defaultdict(float)
    usd_k = x[nx:] * cheapest_any
    for j, (k, d, usd, _p, _s) in enumerate(cols):
        if x[j] > 1e-9:
            by_pool[pool_of(s.deployments[d])] += x[j] * usd
            usd_k[k] += x[j] * usd
    by_class: dict[str, tuple[float, int]] = {}
    for c, cls in enumerate(s.classes):
        mine = streams.klass[counted] == c
        by_class[cls.name] = (float(usd_k[mine].sum()),
                              int(streams.output[counted][mine].sum()))
    return Bound(float(res.fun), int(streams.output[counted].sum()), n,
                 round(float(x[nx:].sum())), no_server, dict(by_pool), by_class)


def full_batch_usd_per_1m(d: Deployment) -> float:
    """A pool's decode price per 1M output tokens at its full batch and listed speed (the
    floor of its per-token share; the scenario's slowdowns not applied)."""
    n = d.accelerator.max_batch
    return d.usd_per_hour / 3.6e6 * d.tpot_ms(n) / n * 1e6


def spend_table(s: TokenScenario, runs: dict[str, list[PoolSpend]]) -> str:
    """Per pool, each policy's billed GPU-seconds, streams, output tokens and $/1M."""
    pools = {pool_of(d): d for d in s.deployments}
    names = list(runs)
    order = sorted(pools, key=lambda p: -max((r.usd for rows in runs.values() for r in rows
                                             if r.pool == p), default=0.0))
    rows = []
    for p in order:
        row: list[object] = [p, f"{pools[p].usd_per_hour:.2f}",
                             f"{full_batch_usd_per_1m(pools[p]):.3f}"]
        for name in names:
            r = next((x for x in runs[name] if x.pool == p), None)
            total = sum(x.usd for x in runs[name])
            row += ([f"{r.gpu_s:,.0f}", f"{r.streams:,}", f"{r.tokens_out:,}",
                     f"{r.usd_per_1m_out:.3f}", f"{r.usd / total:.0%}"] if r is not None
                    else ["0", "0", "0", "–", "0%"])
        rows.append(row)
    heads = ["pool", "$/GPU-h", "$/1M out at full batch"]
    for name in names:
        heads += [f"{name} GPU-s billed", f"{name} streams", f"{name} output tokens",
                  f"{name} $/1M out", f"{name} share of $"]
    return md_table(heads, rows)


def bound_line(b: Bound, name: str, results: dict[str, tuple[float, float]],
               attainment: float, cheaper: float) -> str:
    """One scenario's bound against the policies' ``(within both, $/1M)``, computed."""
    ll = results["lowest-latency"][1]
    sy_both, sy = results["switchyard"]
    target = ll * (1.0 - cheaper)
    reach = ("so the cost target is not out of reach of every router by this bound"
             if b.usd_per_1m_out <= target else
             "so no router can meet the cost target on it")
    return (f"{name}: lower bound ${b.usd_per_1m_out:.3f}/1M output tokens at ≥ "
            f"{attainment:.0%} ({b.missed} of {b.streams:,} streams missed by choice"
            + (f", {b.no_server} fit no server alone" if b.no_server else "")
            + f"), {1 - b.usd_per_1m_out / ll:.0%} below lowest-latency's ${ll:.3f}; the "
            f"target ({cheaper:.0%} below) is ${target:.3f}, {reach}; switchyard "
            f"${sy:.3f} at {sy_both:.2%} ({sy / b.usd_per_1m_out:.1f}× the bound). The "
            "bound's own spend: " + ", ".join(
                f"{p} ${v:.3f}" for p, v in sorted(b.by_pool.items(), key=lambda kv: -kv[1])
                if v >= 0.005 * b.usd) + ".")


def spend_summary(s: TokenScenario, name: str, rows: list[PoolSpend], top: int = 2) -> str:
    """``name``'s dearest pools: their share of its $ and streams, and how far above their
    full-batch floor it paid per token there (computed from ``rows``)."""
    pools = {pool_of(d): d for d in s.deployments}
    usd, n = sum(r.usd for r in rows), sum(r.streams for r in rows)
    parts = [f"{r.pool} {r.usd / usd:.0%} of its $ for {r.streams / n:.0%} of its streams at "
             f"${r.usd_per_1m_out:.2f}/1M, "
             f"{r.usd_per_1m_out / full_batch_usd_per_1m(pools[r.pool]):.1f}× that pool's "
             "full-batch floor" for r in rows[:top]]
    return f"{name}: " + "; ".join(parts) + "."
