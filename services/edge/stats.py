"""What an edge observed per deployment: recent latencies and outcomes.

The hot path appends one number; quantiles are computed by the periodic reporter, which
publishes ``p95`` (read by the pipeline) once ``min_samples`` exist.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 256
IDLE_REFRESHES_TO_FORGET = 10


@dataclass(slots=True)
class DeploymentStats:
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    calls: int = 0
    failures: int = 0
    window_calls: int = 0
    window_failures: int = 0
    rtt_ms: float = 0.0
    idle_refreshes: int = 0


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


class EdgeStats:
    def __init__(self, min_samples: int = 20) -> None:
        self.min_samples = min_samples
        self.by_deployment: dict[str, DeploymentStats] = {}
        self.p95: dict[str, float] = {}  # read by the pipeline on every call

    def record(self, deployment_id: str, latency_ms: float | None, ok: bool) -> None:
        """One call's outcome; ``latency_ms`` None: a served call with no latency sample (a
        stream whose span is not the backend's alone, ``stream.stream_latency_ms``)."""
        s = self.by_deployment.get(deployment_id)
        if s is None:
            s = self.by_deployment[deployment_id] = DeploymentStats()
        s.calls += 1
        s.window_calls += 1
        if ok:
            if latency_ms is not None:
                s.latencies_ms.append(latency_ms)
        else:
            s.failures += 1
            s.window_failures += 1

    def refresh(self) -> dict[str, tuple[int, int, float, float, int]]:
        """Recompute p95s; returns deployment → (samples, failures, p50, p95, calls) for
        reporting, ``calls`` (and ``failures``) counted since the previous refresh."""
        out = {}
        for dep, s in self.by_deployment.items():
            s.idle_refreshes = 0 if s.window_calls else s.idle_refreshes + 1
            if s.idle_refreshes >= IDLE_REFRESHES_TO_FORGET:
                # Unused for a while: what we saw is stale, let the table's estimate decide.
                s.latencies_ms.clear()
                self.p95.pop(dep, None)
            values = sorted(s.latencies_ms)
            p50, p95 = quantile(values, 0.5), quantile(values, 0.95)
            if len(values) >= self.min_samples:
                self.p95[dep] = p95
            out[dep] = (len(values), s.window_failures, p50, p95, s.window_calls)
            s.window_calls = s.window_failures = 0
        return out
