"""Latency estimate: ``L(d, e) = rtt(e, region(d)) + queue(d) + compute(d)`` as a p95.

- ``compute`` is Triton's mean compute time per request times ``UNMEASURED_TAIL_FACTOR``
  (Triton reports sums and counts, not quantiles): 1.5, a lognormal service time's p95 over
  its mean at σ ≈ 0.27. It was ``COMPUTE_P95_FACTOR`` (1.3, σ ≈ 0.17; still the planner's
  and the learned factor's floor); the "estimate before first samples" misses of
  single-cloud-hetero, tight-three-variant and far-edge (seed 0) all came in the first tenth
  of the quick day, at cold start, when no edge has measured anything (``python -m
  benchmarks.cost_check --detail``). 1.65 (σ ≈ 0.33) cost
  far-edge 0.17 point: with every nearby deployment judged infeasible at cold start, the
  fallback's fastest-by-estimate went to a distant H100. With ``TableSettings.learned_tail`` (off by
  default: measured no better on the cost scenarios, see ``placement.routes``) the factor is
  learned instead by ``tail_factor`` from the deployments edges have measured (their observed
  p95 less RTT and modelled queue, over their mean compute; a sample-weighted quantile, never
  below ``COMPUTE_P95_FACTOR``, at most ``MAX_TAIL_FACTOR``), ``DEFAULT_TAIL_FACTOR`` while
  none is measured.
- ``queue`` is the larger of Triton's measured mean queue wait and an M/M/c-style
  ``compute × ρ / (c × (1 − ρ))`` at utilisation ρ (capped at ``MAX_RHO``).
- Once an edge has ``min_samples`` observations of a deployment, its observed p95 replaces
  the whole model (``observed=True`` on the candidate).
"""

from __future__ import annotations

COMPUTE_P95_FACTOR = 1.3  # the floor of the tail factor (and the planner's)
UNMEASURED_TAIL_FACTOR = 1.5  # a table's p95 / mean compute for a deployment nobody measured
DEFAULT_TAIL_FACTOR = 1.3  # before any deployment is measured (1.6 cost far-edge 0.18 pt)
MAX_TAIL_FACTOR = 3.0
MAX_RHO = 0.95


def queue_ms(compute_ms: float, utilisation: float, concurrency: int,
             measured_queue_ms: float = 0.0) -> float:
    rho = min(max(utilisation, 0.0), MAX_RHO)
    modelled = compute_ms * rho / (max(concurrency, 1) * (1.0 - rho))
    return max(modelled, measured_queue_ms)


def p95_ms(rtt_ms: float, queue: float, compute_ms: float,
           factor: float = COMPUTE_P95_FACTOR) -> float:
    return rtt_ms + queue + compute_ms * factor


def tail_ratio(observed_p95_ms: float, rtt_ms: float, queue: float, compute_ms: float) -> float:
    """What a measured deployment's p95 says its service time's p95 is, over its mean."""
    return (observed_p95_ms - rtt_ms - queue) / max(compute_ms, 1e-3)


def tail_factor(ratios: list[tuple[float, int]], default: float = DEFAULT_TAIL_FACTOR,
                quantile: float = 0.5) -> float:
    """The factor for deployments nobody has measured: the sample-weighted median of the
    measured ones' ``(ratio, samples)``, clamped to ``[COMPUTE_P95_FACTOR, MAX_TAIL_FACTOR]``;
    ``default`` when there are none."""
    if not ratios:
        return default
    ordered = sorted(ratios)
    target = sum(w for _, w in ordered) * quantile
    seen = 0
    for r, w in ordered:
        seen += w
        if seen >= target:
            return min(max(r, COMPUTE_P95_FACTOR), MAX_TAIL_FACTOR)
    return default  # pragma: no cover - weights are positive


def capacity_rps(compute_ms: float, concurrency: int) -> float:
    """Requests per second a deployment sustains at full concurrency."""
    return max(concurrency, 1) * 1000.0 / max(compute_ms, 1e-3)
