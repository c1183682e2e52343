"""What placement learns of a compiled (Envoy) edge region from its access log, per push.

A per-call edge keeps its own calls in flight and its own miss margins; an Envoy edge keeps
neither, so placement keeps them for it, from the access-log entries Envoy streams
(``services.xds.feedback``) and from its slow path's reports, and compiles them into the
next push (``services.xds.order.weighted`` via :class:`Learned`):

- each class's calls/s (a class is whatever key the caller learns by, e.g. the model and
  the call's whole-ms SLO): calls counted since the last push, folded into an exponential
  average over ``time_constant_s`` that starts at the class's first window's rate (not at
  0: ``default``'s Envoy row, 551 of its 925 late calls in the first 10 s of the quick day);
  a class whose rate has decayed to nothing is forgotten;
- miss margins per deployment and SLO class (``placement.feedback.SloFeedback``, the same
  rule the per-call edge runs), from each served call's duration against its SLO;
- what the region's slow path sends each deployment (calls/s, the same average, started at
  0: started at its first window, a deployment the slow path fails over to reserved its
  whole burst at once: single-cloud-hetero's Envoy row 0.24/0.15 point lower than with the
  slow path's load averaged from 0, quick, seeds 1107/1108), turned into
  Erlangs of the backend's slots the compiled split must leave alone.

Pure: the caller hands in every event and the time (``now``); nothing is read or timed here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from placement.feedback import SloFeedback
from placement.model import Candidate

TIME_CONSTANT_S = 5.0
FORGET_RATE = 1e-4  # calls/s: a class averaging less (and not called since) is forgotten
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Learned:
    """What the compiler reads: per class key, calls/s and the SLO it is compiled at with
    the margins learned for it; per backend, Erlangs used by other paths; per deployment
    placement saw come back, its slow-start share (``placement.splits``; not learned from
    the access log: ``services.xds.returns`` adds it at each compile)."""

    rates: Mapping[Hashable, float] = field(default_factory=dict)
    margins: Mapping[Hashable, Mapping[str, float]] = field(default_factory=dict)
    reserved: Mapping[str, float] = field(default_factory=dict)
    warming: Mapping[str, float] = field(default_factory=dict)


class EdgeLearning:
    """One edge region's learning; feed it events, read :meth:`learned` at each push."""

    def __init__(self, time_constant_s: float = TIME_CONSTANT_S,
                 feedback: SloFeedback | None = None) -> None:
        self.time_constant_s = time_constant_s
        self.feedback = feedback if feedback is not None else SloFeedback()
        self._calls: dict[Hashable, int] = {}  # since the last push
        self._slos: dict[Hashable, float] = {}  # class -> the SLO its margins are read at
        self._rates: dict[Hashable, float] = {}
        self._other: dict[str, int] = {}  # deployment -> slow-path calls since the last push
        self._other_rates: dict[str, float] = {}
        self._at: float | None = None  # the last push

    def call(self, key: Hashable, slo_ms: float) -> None:
        """One call of class ``key`` (its margins kept at SLO ``slo_ms``) reached the
        compiled path."""
        self._calls[key] = self._calls.get(key, 0) + 1
        self._slos.setdefault(key, slo_ms)

    def served(self, deployment_id: str, slo_ms: float, latency_ms: float, now: float,
               own_slo_ms: float | None = None) -> None:
        """A call of class SLO ``slo_ms`` (where its margin is kept) answered by
        ``deployment_id`` after ``latency_ms``; late against its own SLO (``own_slo_ms``,
        default the class's)."""
        own = slo_ms if own_slo_ms is None else own_slo_ms
        self.feedback.record(deployment_id, slo_ms, latency_ms <= own, now)

    def other_path(self, deployment_id: str) -> None:
        """A call the region's slow path sent ``deployment_id``."""
        self._other[deployment_id] = self._other.get(deployment_id, 0) + 1

    def learned(self, now: float, cands: Mapping[str, Candidate]) -> Learned:
        """Close the window at ``now`` (a push) and return what to compile; ``cands``: the
        region's candidates by deployment id (compute time and backend of each)."""
        if self._at is not None and now > self._at:
            dt = now - self._at
            alpha = 1.0 - math.exp(-dt / self.time_constant_s)
            _fold(self._rates, self._calls, dt, alpha, start=True)
            _fold(self._other_rates, self._other, dt, alpha)
            for k in [k for k in self._slos if k not in self._rates]:
                del self._slos[k]
        if self._at is None or now > self._at:
            self._at = now
        reserved: dict[str, float] = {}
        for dep, r in self._other_rates.items():
            c = cands.get(dep)
            if c is not None and r > 0:
                reserved[c.backend_id] = reserved.get(c.backend_id, 0.0) + r * c.compute_ms / 1e3
        margins = {k: dict(self.feedback.margins(self._slos[k], now)) for k in self._rates}
        return Learned(dict(self._rates), margins, reserved)


def _fold(rates: dict[K, float], counts: dict[K, int], dt: float, alpha: float,
          start: bool = False) -> None:
    for k in set(rates) | set(counts):
        old = rates.get(k)
        if old is None and start:
            # a class first seen takes its first window's rate: an average started at 0 read
            # a new class (every class, at a cold start) at 18 % of its rate after 1 s
            rates[k] = counts[k] / dt
        else:
            old = old or 0.0
            rates[k] = old + alpha * (counts.get(k, 0) / dt - old)
        if rates[k] < FORGET_RATE and not counts.get(k):
            del rates[k]  # decayed to nothing: keys (e.g. SLOs from deadlines) stay bounded
    counts.clear()
