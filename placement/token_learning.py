"""What placement learns of each deployment's LLM streams from every edge (issue 14).

Every edge learns token speeds from the streams it routes (``services.edge.token_stats``) and
reports per deployment a ``StreamSeen``: its fit (prefill ms per uncached prompt token, RTT
already taken out, and the line ``TPOT = base + per_stream × streams in flight``) with the
decayed weight behind it, plus the prompt tokens, output tokens and cost of the stream
attempts that ended there since its previous report. ``TokenLearning`` keeps, per deployment:

- **speed**: each edge's latest fit, forgotten after ``TTL_S``; the fleet's is their average
  weighted by each fit's weight (prefill by the edges that measured one);
- **price**: decayed sums (half-life ``HALF_LIFE_S``) of tokens and cost;
  ``usd_per_1m_input = Σ input $ / Σ prompt tokens × 10⁶`` and the same for output.

What it publishes (``speed``) is rounded to two significant digits: route-table rows carry it
and are pushed only when a row changes (``services.placement.bands.material`` compares it
exactly), so noise in the third digit must not become a push. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

TTL_S = 300.0  # an edge's fit older than this is forgotten
HALF_LIFE_S = 600.0  # of the token and cost sums behind $ per 1M tokens


@dataclass(frozen=True, slots=True)
class StreamSeen:
    """One edge's report on one deployment's LLM streams (see the module docstring)."""

    prefill_ms_per_token: float = 0.0  # 0 = not measured
    tpot_base_ms: float = 0.0
    tpot_per_stream_ms: float = 0.0
    weight: float = 0.0  # 0 = no TPOT fit
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    input_usd: float = 0.0
    output_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class TokenSpeed:
    """A deployment's token speed and price as the fleet learned them (route tables carry it)."""

    prefill_ms_per_token: float
    tpot_base_ms: float
    tpot_per_stream_ms: float
    usd_per_1m_input: float = 0.0  # 0 = no cost observed yet
    usd_per_1m_output: float = 0.0


@dataclass(slots=True)
class _Sums:
    at: float = 0.0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    input_usd: float = 0.0
    output_usd: float = 0.0

    def add(self, s: StreamSeen, now: float) -> None:
        keep = 0.5 ** (max(now - self.at, 0.0) / HALF_LIFE_S) if self.at else 1.0
        self.at = now
        self.tokens_in = self.tokens_in * keep + s.tokens_in
        self.tokens_out = self.tokens_out * keep + s.tokens_out
        self.input_usd = self.input_usd * keep + s.input_usd
        self.output_usd = self.output_usd * keep + s.output_usd


@dataclass(slots=True)
class _Deployment:
    fits: dict[Hashable, tuple[StreamSeen, float]] = field(default_factory=dict)  # edge -> fit
    sums: _Sums = field(default_factory=_Sums)


class TokenLearning:
    """The fleet's token learning per deployment (see the module docstring)."""

    def __init__(self) -> None:
        self._deps: dict[str, _Deployment] = {}

    def observe(self, edge: Hashable, deployment_id: str, seen: StreamSeen,
                now: float) -> bool:
        """Fold one edge's report in; True when what ``speed`` publishes changed."""
        before = self.speed(deployment_id, now)
        d = self._deps.setdefault(deployment_id, _Deployment())
        if seen.weight > 0 or seen.prefill_ms_per_token > 0:
            d.fits[edge] = (seen, now)
        if seen.attempts or seen.tokens_in or seen.tokens_out:
            d.sums.add(seen, now)
        return self.speed(deployment_id, now) != before

    def forget(self, deployment_id: str) -> None:
        self._deps.pop(deployment_id, None)

    def speed(self, deployment_id: str, now: float) -> TokenSpeed | None:
        """The fleet's token speed of the deployment; None until some fresh edge fitted both
        its prefill rate and its TPOT line."""
        d = self._deps.get(deployment_id)
        if d is None:
            return None
        for edge in [e for e, (_, at) in d.fits.items() if now - at > TTL_S]:
            del d.fits[edge]
        fits = [s for s, _ in d.fits.values()]
        tpot = [s for s in fits if s.weight > 0]
        prefill = [s for s in fits if s.prefill_ms_per_token > 0]
        if not tpot or not prefill:
            return None
        w = sum(s.weight for s in tpot)
        pw = sum(max(s.weight, 1.0) for s in prefill)
        sums = d.sums
        return TokenSpeed(
            prefill_ms_per_token=_sig(sum(s.prefill_ms_per_token * max(s.weight, 1.0)
                                          for s in prefill) / pw),
            tpot_base_ms=_sig(sum(s.tpot_base_ms * s.weight for s in tpot) / w),
            tpot_per_stream_ms=_sig(sum(s.tpot_per_stream_ms * s.weight for s in tpot) / w),
            usd_per_1m_input=_sig(sums.input_usd / sums.tokens_in * 1e6
                                  if sums.tokens_in > 0 else 0.0),
            usd_per_1m_output=_sig(sums.output_usd / sums.tokens_out * 1e6
                                   if sums.tokens_out > 0 else 0.0))

    def deployments(self) -> list[str]:
        return sorted(self._deps)


def _sig(x: float, digits: int = 2) -> float:
    """``x`` to ``digits`` significant digits (0 and non-finite values become 0)."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    return float(f"{x:.{digits - 1}e}")
