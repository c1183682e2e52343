"""What one edge learns from the LLM streams it routes, and what each stream reports.

``StreamStats`` is the one owner of the edge's stream state: per deployment the streams in
flight, the prefill time per uncached prompt token and TPOT under load (a decayed
least-squares line ``tpot = a + b × streams in flight``, fitted on what the edge observed), the
session → prefix-holder map (bounded, least recently used out), and which variants declare
that they can resume (``switchyard_resumable`` in their Triton model config, asked once per
variant). It hands ``placement.streams`` read-only ``TokenEstimate``s; the price per second
comes from the route table (``cost_usd / compute_ms``: both are per call, their ratio is the
deployment's $/s). A deployment this edge has measured fewer than ``OWN_MIN_WEIGHT`` times is
estimated from the fleet's learning instead (``Candidate.tokens``: what placement averaged
from every edge's reports), so a fresh edge chooses on it from its first stream; with neither,
it is unmeasured. ``report`` hands the link what to tell placement (``StreamSeen`` per
deployment: the fit, and the tokens and cost of attempts since the last report).

``StreamMeter`` measures one stream (TTFT, TPOT, tokens, cost per attempt segment) and turns
it into the stream's trailers.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from placement.model import Candidate
from placement.streams import TokenEstimate
from placement.token_learning import StreamSeen

ALPHA = 0.2  # EWMA weight of a new prefill sample
DECAY = 0.9  # weight kept by older TPOT samples in the least-squares fit
MAX_SESSIONS = 10_000
OWN_MIN_WEIGHT = 3.0  # own TPOT samples (decayed) before the edge trusts itself over the fleet
# A prefill measured as 0 (the first token came within the row's RTT: a short prompt on a
# loaded host) is reported as this many ms per token, because on the wire 0 means "not
# measured" and placement would never publish the deployment's speed (the edge, trusting its
# own 0, would not measure it again). Below anything a real GPU prefills at.
MEASURED_ZERO_PREFILL_MS = 1e-4


def usd_text(usd: float) -> str:
    """``x-cost-usd`` as the trailers write it (10 decimals): a cap is judged on this text."""
    return f"{usd:.10f}"


def usd_per_second(c: Candidate) -> float:
    """The deployment's price per second, from its per-call cost and compute time."""
    return c.cost_usd * 1000.0 / c.compute_ms if c.compute_ms > 0 else 0.0


@dataclass(slots=True)
class _Learned:
    prefill_ms_per_token: float | None = None
    # decayed sums for the line tpot = a + b × n
    w: float = 0.0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    xy: float = 0.0
    # since the last report to placement
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    input_usd: float = 0.0
    output_usd: float = 0.0

    def tpot_line(self) -> tuple[float, float] | None:
        if self.w <= 0:
            return None
        mean_x, mean_y = self.x / self.w, self.y / self.w
        var = self.xx / self.w - mean_x * mean_x
        slope = (self.xy / self.w - mean_x * mean_y) / var if var > 1e-9 else 0.0
        slope = max(slope, 0.0)
        return max(mean_y - slope * mean_x, 0.0), slope


class StreamStats:
    """The edge's stream state (see the module docstring); read-only views for others."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._inflight: dict[str, int] = {}
        self._learned: dict[str, _Learned] = {}
        self._holders: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._max_sessions = max_sessions
        self._resumable: dict[str, tuple[bool, int]] = {}
        self._pending: dict[str, int] = {}

    # -- load ------------------------------------------------------------------------------

    @property
    def pending(self) -> Mapping[str, int]:
        """Per deployment, uncached prompt tokens of streams still waiting for a first token."""
        return self._pending

    def prefilling(self, deployment: str, tokens: int) -> None:
        """``tokens`` more (or, negative, fewer) prompt tokens waiting on ``deployment``."""
        self._pending[deployment] = self._pending.get(deployment, 0) + tokens

    @property
    def inflight(self) -> Mapping[str, int]:
        return self._inflight

    def started(self, deployment: str) -> int:
        """A stream attempt starts on ``deployment``; returns the streams already there."""
        n = self._inflight.get(deployment, 0)
        self._inflight[deployment] = n + 1
        return n

    def ended(self, deployment: str) -> None:
        self._inflight[deployment] -= 1

    # -- learning --------------------------------------------------------------------------

    def observe(self, deployment: str, *, prefill_ms: float, uncached_tokens: int,
                tpot_ms: float | None, load: int, tokens_out: int = 0, input_usd: float = 0.0,
                output_usd: float = 0.0) -> None:
        """One attempt's measurements: its prefill (TTFT minus RTT) over the prompt tokens the
        deployment had to prefill, its TPOT with ``load`` other streams in flight, the tokens
        it delivered and its cost (prefill, decode)."""
        s = self._learned.setdefault(deployment, _Learned())
        s.attempts += 1
        s.tokens_in += max(uncached_tokens, 0)
        s.tokens_out += tokens_out
        s.input_usd += input_usd
        s.output_usd += output_usd
        if uncached_tokens > 0:
            sample = max(prefill_ms, 0.0) / uncached_tokens
            s.prefill_ms_per_token = sample if s.prefill_ms_per_token is None else (
                s.prefill_ms_per_token + ALPHA * (sample - s.prefill_ms_per_token))
        if tpot_ms is not None and math.isfinite(tpot_ms):
            s.w, s.x, s.y = s.w * DECAY + 1, s.x * DECAY + load, s.y * DECAY + tpot_ms
            s.xx = s.xx * DECAY + load * load
            s.xy = s.xy * DECAY + load * tpot_ms

    def estimates(self, cands: Sequence[Candidate]) -> dict[str, TokenEstimate]:
        """Estimates for the deployments measured so far (both prefill and TPOT), by this
        edge or by the fleet."""
        return {d: est for d, (est, _) in self.sourced(cands).items()}

    def sourced(self, cands: Sequence[Candidate]) -> dict[str, tuple[TokenEstimate, str]]:
        """Each measured deployment's estimate and whose it is: ``"edge"`` (this edge's own,
        once it has ``OWN_MIN_WEIGHT`` samples or the fleet has none) or ``"fleet"``."""
        out = {}
        for c in cands:
            s = self._learned.get(c.deployment_id)
            line = s.tpot_line() if s is not None else None
            own = (None if s is None or s.prefill_ms_per_token is None or line is None
                   else TokenEstimate(s.prefill_ms_per_token, line[0], line[1],
                                      usd_per_second(c)))
            fleet = c.tokens
            if own is not None and (fleet is None or (s is not None
                                                      and s.w >= OWN_MIN_WEIGHT)):
                out[c.deployment_id] = (own, "edge")
            elif fleet is not None:
                out[c.deployment_id] = (TokenEstimate(
                    fleet.prefill_ms_per_token, fleet.tpot_base_ms, fleet.tpot_per_stream_ms,
                    usd_per_second(c)), "fleet")
        return out

    def report(self) -> dict[str, StreamSeen]:
        """What to tell placement per deployment (the fit, and the tokens and cost since the
        previous report, which this resets)."""
        out = {}
        for dep, s in self._learned.items():
            line = s.tpot_line()
            prefill = s.prefill_ms_per_token
            out[dep] = StreamSeen(
                prefill_ms_per_token=(0.0 if prefill is None
                                      else max(prefill, MEASURED_ZERO_PREFILL_MS)),
                tpot_base_ms=line[0] if line else 0.0,
                tpot_per_stream_ms=line[1] if line else 0.0, weight=s.w if line else 0.0,
                attempts=s.attempts, tokens_in=s.tokens_in, tokens_out=s.tokens_out,
                input_usd=s.input_usd, output_usd=s.output_usd)
            s.attempts = s.tokens_in = s.tokens_out = 0
            s.input_usd = s.output_usd = 0.0
        return out

    # -- prefix affinity -------------------------------------------------------------------

    def holder(self, session: str) -> tuple[str, int]:
        """(deployment, context tokens it saw) for ``session``; ("", 0) when unknown."""
        return self._holders.get(session, ("", 0)) if session else ("", 0)

    def remember(self, session: str, deployment: str, context_tokens: int) -> None:
        if not session:
            return
        self._holders[session] = (deployment, context_tokens)
        self._holders.move_to_end(session)
        while len(self._holders) > self._max_sessions:
            self._holders.popitem(last=False)

    # -- resumption ------------------------------------------------------------------------

    def resumable(self, variant: str) -> tuple[bool, int] | None:
        """Whether ``variant`` declared resumption, and its default output tokens; None until
        a backend of it was asked."""
        return self._resumable.get(variant)

    def declare(self, variant: str, resumable: bool, default_tokens: int) -> None:
        self._resumable[variant] = (resumable, default_tokens)


@dataclass(slots=True)
class StreamMeter:
    """One stream's measurements, across its attempts (a resumed stream has several)."""

    start: float
    tokens_in: int
    tokens_out: int = 0
    first_at: float | None = None
    last_at: float | None = None
    resumed: int = 0
    reasons: list[str] = field(default_factory=list)  # why each resumption: failed, slow
    cost_usd: float = 0.0
    measured: bool = False  # a demo-LLM stream: its responses are tokens
    capped: bool = False  # ended at the caller's x-max-cost-usd (its cost is still reported)
    _seg: dict[str, float] = field(default_factory=dict)

    def segment(self, now: float, load: int) -> None:
        self._seg = {"start": now, "load": float(load), "tokens": 0.0}

    def token(self, now: float) -> None:
        self.tokens_out += 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        seg = self._seg
        seg["tokens"] += 1
        seg.setdefault("first", now)
        seg["last"] = now

    def cost_with(self, c: Candidate, now: float) -> float:
        """The stream's cost as ``x-cost-usd`` would report it if a response arrived from
        ``c`` at ``now`` and the attempt ended there (``segment_ended``'s own sums)."""
        seg = self._seg
        if not seg:
            return self.cost_usd
        first = seg.get("first", now)
        prefill_ms = max((first - seg["start"]) * 1000 - c.rtt_ms, 0.0)
        decode_ms = (now - first) * 1000
        return self.cost_usd + usd_per_second(c) * (
            prefill_ms + decode_ms / (int(seg["load"]) + 1)) / 1000

    def segment_ended(self, c: Candidate, stats: StreamStats, prompt_tokens: int,
                      cached_tokens: int) -> None:
        """Fold the attempt on ``c`` into the cost and teach ``stats`` what it showed."""
        seg = self._seg
        if "first" not in seg:
            return
        load = int(seg["load"])
        prefill_ms = max((seg["first"] - seg["start"]) * 1000 - c.rtt_ms, 0.0)
        n = int(seg["tokens"])
        decode_ms = (seg["last"] - seg["first"]) * 1000
        tpot = decode_ms / (n - 1) if n > 1 else None
        usd_s = usd_per_second(c)
        input_usd, output_usd = usd_s * prefill_ms / 1000, usd_s * decode_ms / (load + 1) / 1000
        self.cost_usd += input_usd + output_usd
        if self.measured:
            stats.observe(c.deployment_id, prefill_ms=prefill_ms,
                          uncached_tokens=max(prompt_tokens - cached_tokens, 0),
                          tpot_ms=tpot, load=load, tokens_out=n, input_usd=input_usd,
                          output_usd=output_usd)

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_at is None else (self.first_at - self.start) * 1000

    @property
    def tpot_ms(self) -> float | None:
        if self.first_at is None or self.last_at is None or self.tokens_out < 2:
            return None
        return (self.last_at - self.first_at) * 1000 / (self.tokens_out - 1)

    def met(self, ttft_goal: float | None, tpot_goal: float | None) -> tuple[bool, bool]:
        """Judged on the values as the trailers report them (``x-ttft-ms`` to 0.1 ms,
        ``x-tpot-ms`` to 0.01 ms), so a caller never reads ``x-tpot-ms: 3.50`` beside an
        objective of 3.5 and ``x-tpot-met: false``."""
        ttft = None if self.ttft_ms is None else round(self.ttft_ms, 1)
        tpot = None if self.tpot_ms is None else round(self.tpot_ms, 2)
        ttft_met = ttft_goal is None or (ttft is not None and ttft <= ttft_goal)
        tpot_met = tpot_goal is None or tpot is None or tpot <= tpot_goal
        return ttft_met, tpot_met

    def trailers(self, ttft_goal: float | None, tpot_goal: float | None,
                 served: bool) -> tuple[tuple[str, str], ...]:
        """The stream's token trailers; a failed stream claims no cost or objective, except that
        one ended at its cost cap (``capped``) reports its cost."""
        out = [("x-tokens-in", str(self.tokens_in)), ("x-tokens-out", str(self.tokens_out)),
               ("x-resumed", str(self.resumed))]
        if self.reasons:
            out.append(("x-resumed-reason", ",".join(self.reasons)))
        if not served:  # a stream ended at its cost cap reports what its tokens cost
            if self.capped:
                out.append(("x-cost-usd", usd_text(self.cost_usd)))
            return tuple(out)
        ttft, tpot = self.ttft_ms, self.tpot_ms
        if ttft is not None:
            out.append(("x-ttft-ms", f"{ttft:.1f}"))
        if tpot is not None:
            out.append(("x-tpot-ms", f"{tpot:.2f}"))
        out.append(("x-cost-usd", usd_text(self.cost_usd)))
        if ttft_goal is not None or tpot_goal is not None:  # else x-slo-met is the call's
            ttft_met, tpot_met = self.met(ttft_goal, tpot_goal)
            out += [("x-ttft-met", _bool(ttft_met)), ("x-tpot-met", _bool(tpot_met)),
                    ("x-slo-met", _bool(ttft_met and tpot_met))]
        return tuple(out)


def _bool(b: bool) -> str:
    return "true" if b else "false"
