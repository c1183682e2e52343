"""Tail margins: per deployment, how far past the expected p95 its calls' latency goes.

A p95 leaves 5 % of a deployment's calls above it, while the attainment target leaves
0.5 % (``queueing.TAIL``): a call routed where the p95 just fits its SLO misses about one
time in twenty. ``SloFeedback`` learns that only from misses, one (deployment, SLO class)
at a time. This learns it from every call a deployment serves, whatever its SLO: the
excess ``e = latency − expected`` (``expected`` the p95 the edge used for that deployment,
its own observed one or the table's) and a stochastic quantile tracker of it,

    e > q:  q ← q + η (1 − τ)
    else:   q ← max(0, q − η τ)            η = ETA × expected

which settles where a fraction ``τ`` of the calls exceed ``expected + q``. The SLO filter
adds ``q`` (through ``SloFeedback.margins``), so a deployment whose p95 fits a call's SLO
with less room than its own tail needs is not chosen for it, before any call misses there.
No clock: a deployment that stops taking calls keeps its ``q`` (its tail is its service
noise, which does not go away with time).

Off by default (``SloFeedback(track_tails=False)``). Measured with ``python -m
benchmarks.cost_check`` (switchyard alone, quick horizon, seeds 0 and 1 of every scenario;
default's seed 1 not run) it never cost attainment more than 0.04 point and gained up to
0.18, but it made few-large-pools (σ 0.5) 61–72 % and single-cloud-hetero 15–18 % dearer:
holding *every* call on a deployment to the 0.5 % tail is stricter than the target, which
is over all calls (most have room), so the cheap noisy pools lost their tight calls for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from placement import queueing

ETA = 0.05  # of the expected p95, per call


class TailMargins:
    """One edge's tail margins per deployment; the edge owns it."""

    def __init__(self, tail: float = queueing.TAIL, eta: float = ETA) -> None:
        self.tail, self.eta = tail, eta
        self._q: dict[str, float] = {}
        self.version = 0  # bumped on every change, for callers that cache merged views

    def record(self, deployment_id: str, latency_ms: float, expected_ms: float) -> None:
        """A call served by ``deployment_id`` in ``latency_ms``; the edge expected a p95 of
        ``expected_ms`` there when it chose it."""
        if expected_ms <= 0.0:
            return
        q = self._q.get(deployment_id, 0.0)
        step = self.eta * expected_ms
        if latency_ms - expected_ms > q:
            q += step * (1.0 - self.tail)
        elif q > 0.0:
            q = max(0.0, q - step * self.tail)
        else:
            return
        self.version += 1
        if q > 0.0:
            self._q[deployment_id] = q
        else:
            self._q.pop(deployment_id, None)

    def margins(self) -> Mapping[str, float]:
        """Deployment id -> tail margin (ms), read-only."""
        return MappingProxyType(self._q)
