"""Latency estimate: ``L(d, e) = rtt(e, region(d)) + queue(d) + compute(d)`` as a p95.

- ``compute`` is Triton's mean compute time per request times ``COMPUTE_P95_FACTOR`` (Triton
  reports sums and counts, not quantiles).
- ``queue`` is the larger of Triton's measured mean queue wait and an M/M/c-style
  ``compute × ρ / (c × (1 − ρ))`` at utilisation ρ (capped at ``MAX_RHO``).
- Once an edge has ``min_samples`` observations of a deployment, its observed p95 replaces
  the whole model (``observed=True`` on the candidate).
"""

from __future__ import annotations

COMPUTE_P95_FACTOR = 1.3
MAX_RHO = 0.95


def queue_ms(compute_ms: float, utilisation: float, concurrency: int,
             measured_queue_ms: float = 0.0) -> float:
    rho = min(max(utilisation, 0.0), MAX_RHO)
    modelled = compute_ms * rho / (max(concurrency, 1) * (1.0 - rho))
    return max(modelled, measured_queue_ms)


def p95_ms(rtt_ms: float, queue: float, compute_ms: float) -> float:
    return rtt_ms + queue + compute_ms * COMPUTE_P95_FACTOR


def capacity_rps(compute_ms: float, concurrency: int) -> float:
    """Requests per second a deployment sustains at full concurrency."""
    return max(concurrency, 1) * 1000.0 / max(compute_ms, 1e-3)
