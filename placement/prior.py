"""The compute estimate of a deployment before it has enough samples of its own (issue 11).

Placement knows a deployment's mean compute only from Triton's counters on that backend
(``fleet.VariantLoad.compute_ms``, an EWMA of per-report means). Before any call that is
nothing (``routes.PRIOR_COMPUTE_FRACTION_OF_SLO`` × the model's SLO, whatever the GPU); after
a few calls it is a mean of a few lognormal draws. The same variant on the same accelerator
elsewhere in the fleet runs the same service time, and placement knows it:

- ``pooled``: the fleet's estimate of one (accelerator, variant), each backend's mean weighted
  by the samples behind it (``VariantLoad.samples``, the EWMA's effective count), other
  backends only;
- ``shrunk``: the deployment's own mean pulled towards that pool as a conjugate normal mean
  would be: ``(n·own + m·pool) / (n + m)``, ``m`` the pool's samples capped at ``STRENGTH``
  (a throttled or differently loaded GPU must still win with its own samples);
- ``widened``: the remaining uncertainty of the mean, ``1 + z · cv / sqrt(n)``, on the
  modelled part of a row's p95 (queue and service; not the RTT) while nobody has observed it.
  ``cv`` is the service time's coefficient of variation at the table's tail factor.

Beside it, ``routes.MIX_QUEUE``: a backend's modelled queue at the mean service time of
every variant's calls on it (``routes.mix_ms``; they share one FIFO), not this variant's
own: on ``held-out-many-models`` most unobserved rows that missed were 2-10 ms variants that
waited 80-360 ms behind their backend's long calls.

Pure: the route builder (placement, the simulator) calls it; the edge reads the rows.
Off by default (``routes.FLEET_PRIOR``, ``routes.PRIOR_Z``, ``routes.MIX_QUEUE``; cost_check
``prior-pool``, ``prior-pool-z1.65``, ``mix-queue``). Measured (``python -m
benchmarks.cost_check --seeds 0 1``, all 13 scenarios, quick; RESULTS.md, "Cost: the prior of
a deployment before its first samples"), none kept: ``prior-pool`` takes tight-three-variant
0.03 point and many-small-pools 0.03 point lower (past their seed spreads of 0.01) at ×0.80
tight-three-variant's bill; ``prior-pool-z1.65`` lowers none past its spread and lifts
single-cloud-hetero to 99.61 % (99.58 % over three seeds) and takes 14 % off
tight-three-variant's bill, but is 2.3 % dearer on single-cloud-hetero and 2.2 % on
many-small-pools; ``mix-queue`` lifts held-out-many-models 0.13 point but takes
tight-three-variant and held-out-return-into-burst lower and is 3 % dearer on two. None of
the "estimate before first samples" misses went to a row priced at the SLO × 0.25 prior:
they are p95-planned rows whose draw was past it and, on held-out-many-models, the wait
behind a backend's other variants. The pool's rows are rebuilt only when their own backend
changes (``FleetState.take_dirty``): on, a sibling's new mean would reach them late.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from placement.meet import sigma

STRENGTH = 50.0  # the most samples the pool counts for against a deployment's own


def pooled(means: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """``(mean, samples)`` of ``(mean_ms, samples)`` pairs weighted by samples; None if none
    has a sample."""
    total = weighted = 0.0
    for mean, n in means:
        if n > 0:
            total += n
            weighted += n * mean
    return (weighted / total, total) if total > 0 else None


def shrunk(own_ms: float | None, own_n: float, pool: tuple[float, float] | None,
           strength: float = STRENGTH) -> tuple[float | None, float]:
    """``(mean, samples)`` of a deployment's compute: its own mean pulled towards the pool's
    by the pool's samples (at most ``strength``); the pool's alone when it has none."""
    if pool is None:
        return own_ms, own_n
    m = min(pool[1], strength)
    if own_ms is None or own_n <= 0:
        return pool[0], m
    return (own_n * own_ms + m * pool[0]) / (own_n + m), own_n + m


def cv(tail_factor: float) -> float:
    """The coefficient of variation of a lognormal service time whose p95 is ``tail_factor``
    × its mean (``sqrt(exp(σ²) − 1)``)."""
    s = sigma(1.0, tail_factor)
    return math.sqrt(math.expm1(s * s))


def widened(n: float, tail_factor: float, z: float) -> float:
    """The factor on a row's modelled p95 for a mean known from ``n`` samples: ``1 + z ·
    cv / sqrt(n)``; with no sample, ``1 + z`` (as wide as one sample's spread allows, cv
    at most 1)."""
    if z <= 0:
        return 1.0
    return 1.0 + z * min(cv(tail_factor), 1.0) / math.sqrt(max(n, 1.0))
