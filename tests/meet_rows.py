"""Route rows for the tests of ``placement.meet`` (the fallback's chance of meeting an SLO)."""

from __future__ import annotations

from placement.latency import capacity_rps
from placement.model import Candidate


def meet_row(dep: str, backend: str, compute: float, slots: float, rtt: float = 1.0,
             conc: int = 2, cost: float = 1e-6, busy: float = 0.0) -> Candidate:
    """A row at ``busy`` of its backend's ``conc`` servers at the table's report, with
    ``slots`` of them this edge's share."""
    return Candidate(deployment_id=dep, backend_id=backend, endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0,
                     latency_p95_ms=rtt + compute * 1.5, rtt_ms=rtt, queue_ms=0.0,
                     compute_ms=compute, cost_usd=cost,
                     spare_capacity=capacity_rps(compute, conc) * (1.0 - busy),
                     concurrency=conc, edge_slots=slots)
