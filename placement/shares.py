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
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PROBE_MIN_CALLS_S = 0.5
PROBE_FRACTION = 0.05

IDLE_STEP = 0.25  # the idle fraction is rounded down to this, so load wobble churns nothing

EdgeKey = tuple[str, str]  # (edge region, edge id)


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
