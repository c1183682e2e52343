"""Slot shares: how much of one backend's concurrency each edge may fill, per deployment.

Every edge applies the same table and counts only its own calls in flight, so placement
tells each edge how many of a deployment's slots are its own (``Candidate.edge_slots``).
The slots belong to the *backend*: every variant it hosts queues on the same servers. So
the split is made over the backend's call rates (the sum over its variants of what each
edge reports), then each edge's backend share is divided among the variants it sends:

    backend share(e)   = (U_e + a) / (U + a (n + 1))
    deployment slots   = concurrency × (u_{e,d} + a / V) / (U + a (n + 1))

``U_e`` the calls/s edge ``e`` sends the backend, ``u_{e,d}`` those to variant ``d``, ``U``
the sum over edges, ``n`` the edges sending it calls (or, when none does, every edge
reporting on it: back from an outage, its former users split it), ``V`` the backend's
variants, ``a`` the probe allowance. The last ``a`` is the newcomers': the ``m`` edges known
to placement that do not report on this backend split it (``a / m`` each, ``1 / V`` of that
per variant). Summed over every edge and variant the slots are exactly the backend's
concurrency, however many edges arrive at once; a backend nobody reports on is split
evenly among the known edges and its variants.
"""

from __future__ import annotations

from collections.abc import Mapping

PROBE_MIN_CALLS_S = 0.5
PROBE_FRACTION = 0.05

EdgeKey = tuple[str, str]  # (edge region, edge id)


def slot_share(rates: Mapping[str, Mapping[EdgeKey, float]], edge_region: str,
               deployment_id: str, known_edges: int, variants: int) -> float:
    """The fraction of the backend's slots an edge of ``edge_region`` may fill with
    ``deployment_id``; ``rates`` maps each of the backend's deployments to the calls/s each
    edge reports sending it."""
    variants = max(variants, 1)
    per_edge: dict[EdgeKey, float] = {}
    for by_edge in rates.values():
        for key, rate in by_edge.items():
            per_edge[key] = per_edge.get(key, 0.0) + rate
    if not per_edge:
        return 1.0 / (max(known_edges, 1) * variants)
    total = sum(per_edge.values())
    users = sum(1 for r in per_edge.values() if r > 0) or len(per_edge)
    a = max(PROBE_MIN_CALLS_S, PROBE_FRACTION * total)
    denominator = total + a * (users + 1)
    mine = [k for k in per_edge if k[0] == edge_region]
    if not mine:
        newcomers = max(1, known_edges - len(per_edge))
        return min(1.0, a / newcomers / variants / denominator)
    # Several edges in one region read one table: each gets the mean of their rates.
    sent = rates.get(deployment_id, {})
    u = sum(sent.get(k, 0.0) for k in mine) / len(mine)
    return min(1.0, (u + a / variants) / denominator)
