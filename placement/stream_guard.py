"""The TTFT guard band an edge learns from its own streams: what its predictions missed.

An edge predicts a stream's TTFT from what it sees (``placement.streams.predict``: the RTT,
its own streams still prefilling there, the stream's uncached prefill). It does not see other
edges' streams in the server's queue, a full batch the stream waits behind, nor the server's
noise, so the TTFT it observes is sometimes later. ``TtftGuard`` keeps, per deployment, the
gaps ``observed − predicted`` (ms) of the streams this edge sent there during the last
``max_age_s`` (at most ``window`` of them), and answers a high quantile of them
(``quantile``) as that deployment's margin: ``choose_stream`` adds it to the prediction before
comparing it with the objective. When the fleet is quiet the gaps are small and a stream may
use nearly all of its objective (cheap GPUs qualify); when other edges queue work on a
deployment its gaps grow and it stops qualifying for tight objectives until they shrink again
(a feedback loop per deployment).

A stream still waiting for its first token tells something before it ends: once it is past
its predicted TTFT, the deployment's margin is at least how far past it is (``sent`` /
``first_token`` / ``abandoned``), so a deployment whose queue filled up behind other edges'
streams (or whose batch is full of long generations) stops taking tight streams at once, not
only when its late first tokens come back.

A deployment with fewer than ``min_samples`` recent gaps has no margin: the choice keeps its
fixed fraction of the objective (``placement.streams.TTFT_HEADROOM``) for it, so a deployment
that stopped being chosen because its margin grew is judged by the fixed band again once its
gaps have aged out, and is measured afresh. A negative quantile (the edge over-predicted)
counts as 0: the guard never makes a prediction earlier. Pure: no I/O; time is passed in
(the edge's clock, the simulator's).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping

from placement.errors import ConfigError
from placement.streams import FleetQueue

GUARD_WINDOW = 200  # gaps kept per deployment (the most recent streams this edge sent there)
GUARD_QUANTILE = 0.95  # the margin: this quantile of the kept gaps
GUARD_MIN_SAMPLES = 20  # fewer recent gaps: no margin, the fixed headroom applies
GUARD_MAX_AGE_S = 60.0  # a gap older than this no longer counts


class TtftGuard:
    """Per deployment, the recent gaps between observed and predicted TTFT and their margin."""

    def __init__(self, window: int = GUARD_WINDOW, quantile: float = GUARD_QUANTILE,
                 min_samples: int = GUARD_MIN_SAMPLES,
                 max_age_s: float = GUARD_MAX_AGE_S) -> None:
        if (window < 1 or not 0.0 < quantile <= 1.0 or not 1 <= min_samples <= window
                or max_age_s <= 0):
            raise ConfigError(f"TtftGuard: window {window} ≥ 1, quantile {quantile} in (0, 1], "
                              f"min_samples {min_samples} in 1..window and max_age_s "
                              f"{max_age_s} > 0 required")
        self._window, self._q, self._min, self._age = window, quantile, min_samples, max_age_s
        self._gaps: dict[str, deque[tuple[float, float]]] = {}
        self._margins: dict[str, float] = {}
        # per deployment: stream key → (sent at s, predicted TTFT ms), no first token yet
        self._waiting: dict[str, dict[object, tuple[float, float]]] = {}
        self._where: dict[object, str] = {}

    def sent(self, key: object, deployment: str, predicted_ms: float, now_s: float) -> None:
        """Stream ``key`` was sent to ``deployment`` at ``now_s``, predicted at
        ``predicted_ms`` (without a margin)."""
        self.abandoned(key)
        self._waiting.setdefault(deployment, {})[key] = (now_s, predicted_ms)
        self._where[key] = deployment

    def first_token(self, key: object, now_s: float) -> None:
        """Stream ``key``'s first token came at ``now_s``: its gap is learned."""
        d = self._where.pop(key, None)
        if d is None:
            return
        sent_s, predicted_ms = self._waiting[d].pop(key)
        self.observed(d, predicted_ms, (now_s - sent_s) * 1000.0, now_s)

    def abandoned(self, key: object) -> None:
        """Stream ``key`` ended (or moved) without a first token: forget it."""
        d = self._where.pop(key, None)
        if d is not None:
            self._waiting[d].pop(key, None)

    def observed(self, deployment: str, predicted_ms: float, observed_ms: float,
                 now_s: float) -> None:
        """One stream's first token on ``deployment`` at ``now_s``: it was predicted at
        ``predicted_ms`` (without a margin) and came at ``observed_ms``."""
        if not (math.isfinite(predicted_ms) and math.isfinite(observed_ms)):
            return
        gaps = self._gaps.setdefault(deployment, deque(maxlen=self._window))
        gaps.append((now_s, observed_ms - predicted_ms))
        self._refresh(deployment, gaps, now_s)

    def margins(self, now_s: float) -> Mapping[str, float]:
        """Per deployment with at least ``min_samples`` gaps younger than ``max_age_s`` at
        ``now_s``, its margin in ms (≥ 0)."""
        for d, gaps in self._gaps.items():
            if gaps and gaps[0][0] < now_s - self._age:
                self._refresh(d, gaps, now_s)
        late = {d: max((now_s - t) * 1000.0 - p for t, p in w.values())
                for d, w in self._waiting.items() if w}
        late = {d: v for d, v in late.items() if v > self._margins.get(d, 0.0)}
        return {**self._margins, **late} if late else self._margins

    def samples(self, deployment: str) -> int:
        return len(self._gaps.get(deployment, ()))

    def _refresh(self, deployment: str, gaps: deque[tuple[float, float]], now_s: float) -> None:
        while gaps and gaps[0][0] < now_s - self._age:
            gaps.popleft()
        if len(gaps) >= self._min:
            self._margins[deployment] = max(quantile(sorted(g for _, g in gaps), self._q), 0.0)
        else:
            self._margins.pop(deployment, None)


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of a sorted, non-empty list (linear between ranks, as numpy)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def tpot_factors(running: Iterable[tuple[str, float, float]]) -> dict[str, float]:
    """Per deployment, how much slower than predicted this edge's streams decoding there now
    are: the mean of ``observed / predicted`` TPOT over ``(deployment, predicted_ms,
    observed_ms)`` of streams in flight (the edge sees their tokens arrive), at least 1 (a
    faster deployment is left to the learned line). A throttled GPU shows up here while its
    streams run, not only when they end and teach the TPOT line."""
    sums: dict[str, tuple[float, int]] = {}
    for d, predicted, observed in running:
        if predicted > 0 and math.isfinite(observed):
            total, n = sums.get(d, (0.0, 0))
            sums[d] = (total + observed / predicted, n + 1)
    return {d: max(total / n, 1.0) for d, (total, n) in sums.items()}


PENDING_LOG_S = 10.0  # how far back an edge keeps its own pending tokens (reports are ~1 s old)


class PendingLog:
    """This edge's own pending prefill tokens per deployment over the last ``max_age_s``, so
    that a fleet report sampled ``age`` ago can be told apart from what of it is this edge's
    (``FleetQueue.own_tokens``): ``record`` after every change, ``at`` answers the state at
    a past time (before the first record: nothing pending). Pure; time is passed in."""

    def __init__(self, max_age_s: float = PENDING_LOG_S) -> None:
        if max_age_s <= 0:
            raise ConfigError(f"PendingLog: max_age_s {max_age_s} > 0 required")
        self._age = max_age_s
        self._times: list[float] = []
        self._states: list[dict[str, int]] = []

    def record(self, now_s: float, pending: Mapping[str, int]) -> None:
        """The edge's pending tokens per deployment are ``pending`` from ``now_s`` on."""
        if self._times and now_s < self._times[-1]:
            raise ValueError(f"PendingLog: time went back ({now_s} < {self._times[-1]})")
        if self._times and now_s == self._times[-1]:
            self._states[-1] = dict(pending)
        else:
            self._times.append(now_s)
            self._states.append(dict(pending))
        cut = bisect.bisect_right(self._times, now_s - self._age)
        if cut > 1:  # keep the newest state older than the horizon: it holds until the next
            del self._times[:cut - 1], self._states[:cut - 1]

    def at(self, t_s: float) -> Mapping[str, int]:
        """The pending tokens per deployment as they were at ``t_s``."""
        i = bisect.bisect_right(self._times, t_s)
        return self._states[i - 1] if i else {}


def fleet_queues(reported: Mapping[str, tuple[int, float]], log: PendingLog,
                 now_s: float) -> dict[str, FleetQueue]:
    """``choose_stream``'s ``fleet`` from what the route rows carry per deployment:
    ``(waiting_tokens, age_s)``, the server's queue and how long ago it was sampled; this
    edge's own part of it is its pending tokens there at ``now_s − age_s``."""
    return {d: FleetQueue(tokens, log.at(now_s - age).get(d, 0))
            for d, (tokens, age) in reported.items()}
