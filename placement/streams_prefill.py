"""A deployment's prefill learned as a line, a wait plus a rate per token (issue 14).

The edge measures a stream's prefill as its first token's time less the RTT, and until now
learned one number from it, ms per uncached prompt token (``services/edge/token_stats``, an
EWMA of ``prefill_ms / tokens``). But what the edge measures is ``wait + base + rate ×
tokens``: the wait behind other edges' prefills (which it cannot see) and the server's fixed
overhead do not grow with the prompt. Folded into a per-token rate, one short prompt that
waited 300 ms behind another edge's prefill reads as a GPU many times slower, and the next
long prompt there is predicted far over its TTFT objective (tokens-reclaim, seed +0, full
horizon: of the $ Switchyard spent beyond the cheapest-feasible oracle, 24 % went to streams
whose oracle pool the edge predicted over the whole TTFT objective, its learned rate there
4.7–6.3× the pool's listed one, while the oracle's streams met 0.6 of it:
``python -m benchmarks.tokens_versus``).

``PrefillLine`` fits ``prefill_ms = wait + rate × tokens`` by least squares over decayed
samples (each new sample keeps ``DECAY`` of the older ones' weight, as the edge's TPOT line),
``tokens`` the uncached prompt tokens the server had to prefill for the stream, this edge's own
queued ahead of it included. The wait it learns is a mean over the samples, not a bound: the
TTFT headroom still covers the waits above it. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

DECAY = 0.9  # weight an older sample keeps at each new one (the TPOT line's)
MIN_WEIGHT = 3.0  # decayed samples before the line is trusted over the per-token ratio
# the tokens' spread (coefficient of variation) below which a slope is not fitted: prompts
# all about one length say nothing about the rate apart from the wait
MIN_SPREAD = 0.1
MIN_RATE_MS = 1e-4  # the rate is never fitted below this (ms per token)
# EWMA weight of a new sample in the recent wait: each sample's prefill less the rate the line
# had fitted times its tokens (the per-token ratio's own weight, ``token_stats.ALPHA``): the
# waits come and go with the other edges' load, faster than the line's memory
RECENT_ALPHA = 0.2
CLIP = 2.0


@dataclass(slots=True)
class PrefillLine:
    """Decayed least-squares sums of (tokens, prefill ms) for one deployment."""

    w: float = 0.0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    xy: float = 0.0
    recent: float | None = None  # the recent wait (ms), see ``RECENT_ALPHA``
    # "recent": the line's rate and the recent wait; "mean": the line's intercept (its mean
    # wait); "peak": the recent wait up at once, down at RECENT_ALPHA / 2; "clip": no line,
    # the per-token ratio's EWMA with each sample at most CLIP × the estimate (no wait)
    mode: str = "recent"
    ratio: float | None = None

    def observe(self, tokens: int, prefill_ms: float) -> None:
        """One stream's prefill: ``prefill_ms`` (first token less RTT, ≥ 0) for ``tokens``
        uncached prompt tokens prefilled up to its own (this edge's queued ahead included)."""
        if tokens <= 0:
            return
        t, ms = float(tokens), max(prefill_ms, 0.0)
        sample = ms / t
        self.ratio = sample if self.ratio is None else self.ratio + RECENT_ALPHA * (
            min(sample, CLIP * self.ratio) - self.ratio)
        fit = self._line()
        if fit is not None:
            resid = max(ms - fit[1] * t, 0.0)
            alpha = RECENT_ALPHA
            if self.mode == "peak":
                alpha = 1.0 if self.recent is None or resid > self.recent else RECENT_ALPHA / 2
            self.recent = resid if self.recent is None else (
                self.recent + alpha * (resid - self.recent))
        self.w = self.w * DECAY + 1.0
        self.x = self.x * DECAY + t
        self.y = self.y * DECAY + ms
        self.xx = self.xx * DECAY + t * t
        self.xy = self.xy * DECAY + t * ms

    def fit(self) -> tuple[float, float] | None:
        """``(wait_ms, ms_per_token)``, or None before ``MIN_WEIGHT`` samples. Too little
        spread in the tokens, or a slope ≤ 0 (the waits dominate): the ratio of the sums with
        no wait (the per-token rate the edge learned before, over the same samples). A
        negative intercept: the line through the origin."""
        if self.mode == "clip":
            return None if self.ratio is None or self.w < MIN_WEIGHT else (0.0, self.ratio)
        line = self._line()
        if line is None or self.mode == "mean" or self.recent is None:
            return line
        return self.recent, line[1]

    def _line(self) -> tuple[float, float] | None:
        if self.w < MIN_WEIGHT or self.x <= 0:
            return None
        mx, my = self.x / self.w, self.y / self.w
        var = self.xx / self.w - mx * mx
        if var <= (MIN_SPREAD * mx) ** 2:
            return 0.0, max(my / mx, MIN_RATE_MS)
        slope = (self.xy / self.w - mx * my) / var
        if slope <= 0:
            return 0.0, max(my / mx, MIN_RATE_MS)
        wait = my - slope * mx
        if wait < 0:
            return 0.0, max(self.xy / self.xx, MIN_RATE_MS)
        return wait, max(slope, MIN_RATE_MS)


# A learned prefill rate goes stale where the edge stops sending: a rate inflated by a
# congestion keeps the deployment's predictions over the objective, so no stream goes there
# and no sample corrects it (tokens-reclaim, seed +0: the options the edge predicted over the
# TTFT objective had their last sample a median 56 s before, p90 417 s; the feasible ones
# 4.4 s). The prediction uses the rate relaxed toward the lowest rate the edge learned there,
# halving the excess every ``RELAX_HALF_LIFE_S`` since the last sample; the stored rate is
# unchanged, so the next sample (a stream sent on the relaxed prediction) resets the age.
RELAX_HALF_LIFE_S = 20.0


def relaxed_rate(rate: float, floor: float, age_s: float,
                 half_life_s: float = RELAX_HALF_LIFE_S) -> float:
    """``rate`` (ms per token, last learned ``age_s`` ago) relaxed toward ``floor`` (the
    lowest rate learned there): ``floor + (rate − floor) × 2^(−age / half-life)``; never
    below ``floor`` nor above ``rate``; ``half_life_s`` ≤ 0: ``rate``."""
    if half_life_s <= 0 or rate <= floor or age_s <= 0:
        return rate
    return floor + (rate - floor) * float(0.5 ** (age_s / half_life_s))
