"""Why an LLM stream would go where it goes (``switchyard explain --stream``).

The edge's own ``StreamChoice`` for the stream (``placement.streams``, the choice its calls
make) is explained deployment by deployment: predicted TTFT, TPOT and cost, the cost per 1M
tokens of this stream (``cost / (prompt + output tokens) × 10⁶``), whose learning predicted it
(this edge's, the fleet's, or nothing yet), whether it holds the session's prefix, and one
reason, in the order ``choose_stream`` applies its rules:

1. unmeasured: predicted optimistically (its table p95 as TTFT, no cost), so it gets tried;
2. misses an objective: which one, predicted against asked (TTFT against the objective less
   ``placement.streams.TTFT_HEADROOM``, the guard band the choice keeps);
3. at the load bound (consistent hashing with bounded loads);
4. costs more than the cheapest feasible beyond the band;
5. within the band but not first: the holder, or the session's hash order, took it.

Under the ``fastest`` profile the edge takes the lowest predicted TTFT + max_tokens × TPOT,
so every other deployment is explained by that sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from placement.streams import COST_BAND, TTFT_HEADROOM, StreamAsk, StreamChoice, StreamOption


@dataclass(frozen=True, slots=True)
class StreamVerdict:
    option: StreamOption
    learned_from: str  # "edge", "fleet" or "" (unmeasured)
    prefix_holder: bool
    usd_per_1m_tokens: float
    reason: str


@dataclass(frozen=True, slots=True)
class StreamExplanation:
    verdicts: tuple[StreamVerdict, ...]
    chosen: str
    slo_met: bool
    summary: str


def explain_stream(choice: StreamChoice, ask: StreamAsk, sources: Mapping[str, str],
                   band: float = COST_BAND, profile: str = "cheapest",
                   ttft_headroom: float = TTFT_HEADROOM) -> StreamExplanation:
    """``choice`` explained per deployment; ``sources`` says whose learning predicted each
    measured deployment (see the module docstring)."""
    chosen = choice.candidate.deployment_id
    feasible = [o for o in choice.options if o.feasible]
    under = [o for o in feasible if o.load < o.bound]
    cheapest = min((o.cost_usd for o in under), default=None)
    tokens = max(ask.prompt_tokens + ask.max_tokens, 1)
    verdicts = []
    for o in choice.options:
        d = o.candidate.deployment_id
        if d == chosen:
            reason = f"chosen: {choice.reason}"
        elif profile == "fastest":
            reason = (f"slower: predicted TTFT + {ask.max_tokens} × TPOT = "
                      f"{_total(o, ask):.0f} ms vs {_total(choice.chosen, ask):.0f} ms")
        else:
            reason = _why_not(o, ask, cheapest, band, ttft_headroom)
        verdicts.append(StreamVerdict(o, sources.get(d, "") if o.measured else "",
                                      bool(ask.holder) and d == ask.holder,
                                      o.cost_usd / tokens * 1e6, reason))
    summary = (f"{len(feasible)} of {len(choice.options)} deployments are predicted to meet "
               f"the stream's objectives ({_objectives(ask)}); {chosen}"
               + ("" if choice.slo_met else " as a best effort: nothing meets them"))
    return StreamExplanation(tuple(verdicts), chosen, choice.slo_met, summary)


def _why_not(o: StreamOption, ask: StreamAsk, cheapest: float | None, band: float,
             headroom: float) -> str:
    if not o.measured:
        return ("unmeasured: predicted optimistically (table p95 as TTFT, no cost) so it is "
                "tried before estimates are trusted")
    missed = []
    if ask.ttft_ms is not None and o.ttft_ms > ask.ttft_ms * (1.0 - headroom):
        missed.append(f"TTFT {o.ttft_ms:.1f} ms > {ask.ttft_ms * (1.0 - headroom):g} ms"
                      + (f" (the {ask.ttft_ms:g} ms objective less a {headroom:.0%} guard "
                         "band for other edges' prefills)" if headroom else ""))
    if ask.tpot_ms is not None and o.tpot_ms > ask.tpot_ms:
        missed.append(f"TPOT {o.tpot_ms:.2f} ms > {ask.tpot_ms:g} ms")
    if missed:
        return "misses an objective: predicted " + ", ".join(missed)
    if o.load >= o.bound:
        return (f"at the load bound: {o.load} streams in flight, bound {o.bound} "
                "(bounded-load hashing)")
    if cheapest is not None and o.cost_usd > cheapest * (1.0 + band):
        more = (o.cost_usd / cheapest - 1.0) * 100 if cheapest > 0 else float("inf")
        return f"feasible, but {more:.0f}% dearer than the cheapest feasible"
    if ask.holder and o.candidate.deployment_id != ask.holder:
        return "as cheap, but the session's prefix holder is too"
    return "as cheap, but later in the session's hash order"


def _total(o: StreamOption, ask: StreamAsk) -> float:
    return o.ttft_ms + ask.max_tokens * o.tpot_ms


def _objectives(ask: StreamAsk) -> str:
    parts = []
    if ask.ttft_ms is not None:
        parts.append(f"TTFT ≤ {ask.ttft_ms:g} ms")
    if ask.tpot_ms is not None:
        parts.append(f"TPOT ≤ {ask.tpot_ms:g} ms")
    return ", ".join(parts) or "none asked"
