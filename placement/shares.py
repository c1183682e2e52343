"""Slot shares: how much of one backend's concurrency each edge may fill.

Every edge applies the same table and counts only its own calls in flight, so placement
tells each edge how many of a backend's slots are its own (``Candidate.edge_slots``, the
same on every row of the backend). The slots belong to the *backend*: every variant it
hosts queues on the same servers, so an edge counts its calls in flight on the backend
(every variant) against one share, split over the backend's call rates (the sum over its
variants of what each edge reports):

    backend share(e) = (U_e + a) / (U + a (n + 1))        slots = concurrency × share

``U_e`` the calls/s edge ``e`` sends the backend, ``U`` the sum over edges, ``n`` the edges
sending it calls (or, when none does, every edge reporting on it: back from an outage, its
former users split it), ``a`` the probe allowance. The last ``a`` is the newcomers': the
``m`` edges known to placement that do not report on this backend split it (``a / m``
each). Summed over every edge the slots are exactly the backend's concurrency, however many
edges arrive at once; a backend nobody reports on is split evenly among the known edges.

Earlier the edge's share was divided again among the variants it sends (in proportion to
their rates): a variant an edge sends rarely then got a sliver of a slot even on an idle
backend, and its calls went to dearer deployments (``tight-three-variant``'s 1.5 s class:
two thirds of the scenario's cost).

Tried and rejected (issue 11, ``python -m benchmarks.cost_check``, quick, seeds 0 and 1,
every scenario but default): splitting by the slots each edge keeps busy (rate × the
deployment's mean service, Little's law) instead of by call rate, so an edge sending a
backend few long calls is not held to the share of one sending many short ones:
tight-three-variant 99.45/99.50 % → 99.31/99.41 %, single-cloud-hetero 99.52/99.45 % →
99.43/99.38 %, noisy-cheap-spot seed 0 99.60 → 99.41 %, no cheaper anywhere.

Idle-slot borrowing (``BORROW``). Past its share an edge plans for every slot busy ahead of
its excess (``CallContext.latency_ms``), the worst case that keeps most calls off cheaper
rows (``placement.filters.slo``). ``borrowed_ms`` lets it take an idle slot instead, priced
by its queueing risk: the M/M/c wait at the backend's reported utilisation plus this edge's
excess, exceeded by a fraction ``CallContext.borrow_tail`` of calls. That fraction is the
edge's own miss budget (``borrow_tail``): what the attainment target (``queueing.TAIL``)
leaves above the upper bound of the miss rate over its last few thousand calls (0 before
~1,200 clean calls, and again once it misses as often as the target allows). The edge's
router and the cost simulator fill it the same way from their ``SloFeedback``.

Measured with ``BORROW`` on, ``python -m benchmarks.cost_check --seeds 0 1 --variants
base borrow`` before it was on (``base`` below is the brain without it, now the variant
``no-borrow``; each run in a fresh process). Noise, the seed-to-seed spread of ``base``
at the quick horizon: 0.00–0.07 point (single-cloud-hetero 99.52/99.45 %, noisy-cheap-spot
99.60/99.53 %, tight-three-variant 99.45/99.50 %); a run's misses also vary by about
√(misses) between two runs of one seed. Quick, every scenario, seeds 0/1: attainment
within −0.01 (default seed 0, 99.85 → 99.84 %) and +0.13 point (noisy-cheap-spot seed 1,
99.53 → 99.66 %) of ``base`` on every run, and cheaper on 6 of 10 scenarios (default
19.6/20.0 → 19.2/19.7 USD/1M, few-large-pools seed 0 10.9 → 10.6, held-out-long-tail
4.58/4.79 → 4.50/4.71; far-edge, held-out-diurnal-return, noisy-cheap-spot under 2 %), the
same elsewhere (tight-three-variant, single-cloud-hetero, many-small-pools, small: no edge
there has a budget at the quick horizon). Full horizon (``--full``): tight-three-variant,
the worst case, 99.53/99.53 → 99.55/99.54 % at 12.8/14.3 → 13.1/12.8 USD/1M;
noisy-cheap-spot 99.83/99.79 → 99.88/99.83 % at 4.41/4.45 → 4.38/4.43; single-cloud-hetero
99.62/99.61 → 99.61/99.57 % at 24.7/26.0 → 25.0/26.3 (seed 1: 219 misses against 199,
"queueing not foreseen" 85 → 103: the one run lower by more than its seed spread at that
horizon, 0.01, within √(199 + 219) ≈ 20 misses); default seed 0 (``no-borrow`` against
``base`` while this was on) 99.89 → 99.84 % at 18.9 → 17.5 USD/1M: 292 → 443 misses,
"queueing not foreseen" 60 → 159, "estimate before first samples" 106 → 161, five times
√(292 + 443): a drop beyond noise on the largest scenario's full day. Not adopted (off).
Most likely (not measured apart) the borrowing edges push the calls of edges within their
shares into queues those did not foresee; a bound on that (every edge's borrowing counted
against the idle slots, or the budget spent by the misses it causes on other edges) is not
built.

Measured and off: a fixed tail instead of the edge's budget (``borrow-fixed-0.0005``,
``-0.002``: borrowing from the first call, cold start included): tight-three-variant
(seeds 0/1) 99.40/99.37 % and 99.27/99.33 %, single-cloud-hetero seed 0 99.41 and
99.37 %; the budget's bound at z = 1 (``borrow-z1``): tight-three-variant 99.42/99.45 %;
borrowing only where at most the budget's fraction of calls would wait at all (``BORROW_NO_WAIT``,
``borrow-no-wait``): single-cloud-hetero full 99.66/99.55 % at 24.7/25.4 USD/1M, no
steadier than the priced wait.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from placement import latency as latency_model
from placement import queueing
from placement.feedback import SloFeedback, miss_bounds
from placement.model import CallContext, Candidate

PROBE_MIN_CALLS_S = 0.5
PROBE_FRACTION = 0.05

IDLE_STEP = 0.25  # the idle fraction is rounded down to this, so load wobble churns nothing

EdgeKey = tuple[str, str]  # (edge region, edge id)

BORROW = False  # idle-slot borrowing (``borrow_tail``); see the module docstring
BORROW_NO_WAIT = False  # borrow only where at most ``borrow_tail`` of calls would wait
BORROW_Z = 2.0  # the edge's miss rate's upper bound (``feedback.miss_bounds``) at this z


def borrowable(utilisation: float) -> float:
    """How many times its own share of a backend's slots an edge may fill: its share of the
    servers plus the same share of those idle at the last report (rounded down to
    ``IDLE_STEP``). Every edge borrowing at once fills the idle servers at most once more,
    so a call on a borrowed slot waits for at most about one call ahead of it."""
    idle = 1.0 - min(max(utilisation, 0.0), 1.0)
    return 1.0 + math.floor(idle / IDLE_STEP + 1e-9) * IDLE_STEP


def slot_share(rates: Mapping[str, Mapping[EdgeKey, float]], edge_region: str,
               deployment_id: str, known_edges: int, variants: int) -> float:
    """The fraction of the backend's slots an edge of ``edge_region`` may fill (with any of
    its variants); ``rates`` maps each of the backend's deployments to the calls/s each edge
    reports sending it. ``deployment_id`` and ``variants`` no longer change the answer (the
    share is the backend's); they stay for callers that pass them."""
    per_edge: dict[EdgeKey, float] = {}
    for by_edge in rates.values():
        for key, rate in by_edge.items():
            per_edge[key] = per_edge.get(key, 0.0) + rate
    if not per_edge:
        return 1.0 / max(known_edges, 1)
    total = sum(per_edge.values())
    users = sum(1 for r in per_edge.values() if r > 0) or len(per_edge)
    a = max(PROBE_MIN_CALLS_S, PROBE_FRACTION * total)
    denominator = total + a * (users + 1)
    mine = [k for k in per_edge if k[0] == edge_region]
    if not mine:
        newcomers = max(1, known_edges - len(per_edge))
        return min(1.0, a / newcomers / denominator)
    # Several edges in one region read one table: each gets the mean of their rates.
    u = sum(per_edge[k] for k in mine) / len(mine)
    return min(1.0, (u + a) / denominator)


def borrow_tail(fb: SloFeedback, tail: float = queueing.TAIL) -> float:
    """``CallContext.borrow_tail`` for an edge's next call: the part of the attainment
    target's miss budget (``tail``) that this edge's own misses have left, with confidence
    (``tail`` less the upper bound of its miss rate over its last few thousand calls); 0
    while ``BORROW`` is off, before the edge has seen enough calls to know, and once it
    misses as often as the target allows. The edge's router and the cost simulator both
    fill it from here."""
    if not BORROW:
        return 0.0
    return max(0.0, tail - miss_bounds(fb.missed, fb.calls, BORROW_Z)[1])


def borrowed_ms(c: Candidate, ctx: CallContext, predicted: float) -> float:
    """The p95 a call can expect from ``c`` when, past this edge's slot share of its
    backend (``predicted``: the worst case of ``CallContext.latency_ms``), it takes an
    idle slot another edge's share holds. Priced by its queueing risk: the M/M/c wait
    (``queueing.wait_ms``) exceeded by a fraction ``ctx.borrow_tail`` of calls, at the
    backend's reported utilisation plus this edge's excess, on top of the row's p95. A
    tight SLO has little room for that wait, so it borrows less; a small miss budget makes
    the wait longer. At most ``borrowable`` times the share (every edge borrowing at once
    fills the idle servers at most once more); ``predicted`` when that is cheaper, within
    the share or without a budget."""
    tail = ctx.borrow_tail
    k = c.slots
    if tail <= 0.0 or k <= 0:
        return predicted
    base = ctx.p95_ms(c)
    if predicted <= base:
        return predicted
    servers = max(c.concurrency, 1)
    capacity = latency_model.capacity_rps(c.compute_ms, servers)
    busy = 1.0 - min(1.0, max(0.0, c.spare_capacity / capacity)) if capacity > 0 else 1.0
    prefix = c.backend_id + "/"
    n = sum(v for dep, v in ctx.inflight.items() if dep.startswith(prefix))
    if n >= k * borrowable(busy):
        return predicted
    rho = busy + (n - k + 1.0) / servers
    wait = queueing.wait_ms(c.compute_ms, servers, rho, tail)
    if BORROW_NO_WAIT and wait > 0.0:
        return predicted
    return min(predicted, base + wait)
