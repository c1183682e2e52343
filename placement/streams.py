"""Choosing a deployment for an LLM stream by tokens: TTFT, TPOT and cost per token.

For each deployment ``d`` that survived the call's hard filters, with what the edge learned of
it (``TokenEstimate``) and the streams it has in flight now (``n``), a stream of ``P`` prompt
tokens (``K`` of them in ``d``'s prefix cache) asking for ``M`` output tokens predicts:

- ``TTFT(d) = rtt(d) + (Q + P − K) × prefill_ms_per_token(d)`` where ``Q`` is the
  uncached prompt tokens of this edge's own streams at ``d`` that have not had their first
  token yet (``pending``; they prefill first), plus, when placement put the fleet's queue on
  the route rows (``fleet``: ``FleetQueue``, what the agents last reported of the server's
  streams still waiting for a first token, all edges'), the part of it that is other edges'
  (reported minus this edge's own share of it when it was sampled: no double count); a
  fixed prefill overhead is folded into the learned per-token rate
- ``TPOT(d) = tpot_base(d) + tpot_per_stream(d) × n``  (TPOT under load: the new stream
  joins a batch of ``n`` others)
- ``cost(d) = usd_per_second(d) × ((P − K) × prefill_ms + M × TPOT(d) / (n + 1)) / 1000``
  (decode time is shared by the batch; prefill is the stream's own)

It is feasible when ``TTFT ≤ ttft × (1 − TTFT_HEADROOM)`` and ``TPOT ≤ tpot`` (each only
when asked): the edge predicts from its own streams only, and another edge's prefill may be
running when this one arrives, so half the TTFT objective is left for that wait. Where the
edge learned a TTFT margin for the deployment (``placement.stream_guard.TtftGuard``: a high
quantile of its recent observed − predicted gaps, or how late a stream still waiting there
already is), also ``TTFT + margin ≤ ttft × (1 − GUARDED_HEADROOM)``: a deployment other
edges have queued up stops taking tight streams. The choice
is the cheapest feasible deployment under the load bound; among those within ``band`` of
that cost, the session's prefix holder, else the first in the session's consistent-hash
order. Consistent hashing with bounded loads: the bins are the feasible deployments priced
(per GPU-second) within ``band`` of the cheapest feasible one, and a deployment's bound is
``ceil(load_factor × (this edge's streams on those bins + 1) / bins)``, so one hot prefix
spreads over the equally cheap deployments instead of piling onto one, every edge orders a
session's deployments the same way without sharing state, and the cheap tier can still fill
up to what its TPOT under load allows (the bins' loads never all reach the bound; averaging
over every deployment, dear ones included, pushed streams onto dearer GPUs while cheap ones
had room). Only when every feasible deployment is at its bound does the least loaded of
them take the stream.
The holder's cache hit enters its TTFT and cost, so it wins whenever the hit makes it
feasible or cheaper. Nothing feasible: the cheapest of the deployments whose predicted
TTFT + M × TPOT, and TPOT when a TPOT objective is asked, are within ``FALLBACK_BAND`` of
the fastest's (lowest TTFT + M × TPOT) and that are predicted to meet
every objective the fastest is predicted to meet (the whole objective, no headroom), marked
``slo_met=False`` (a best effort: the fastest, unless one nearly as fast, giving up nothing
more, costs less).

An unmeasured deployment (no estimate yet) is predicted optimistically (its table p95 as TTFT,
no TPOT, no cost), so each is tried before estimates are trusted (with ``unmeasured_probes``,
one probe at a time: not the default, see ``UNMEASURED_PROBES``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from placement.errors import NoHealthyDeployment, PolicyUnsatisfiable
from placement.model import Candidate

RING_POINTS = 16  # virtual points per deployment on the hash ring
COST_BAND = 0.05  # feasible deployments within 5 % of the cheapest are equally cheap
LOAD_FACTOR = 1.25  # consistent hashing with bounded loads: c in ceil(c × m / n)
# The fraction of a TTFT objective a prediction leaves free: the edge sees only its own
# streams, so another edge's prefill may be running when this stream arrives. Measured by
# ``python -m benchmarks.tokens`` (two workloads): 0 → 95–96 % within both objectives,
# 0.5 → ≥ 99 % at ≥ 40 % below the lowest-latency policy's cost.
TTFT_HEADROOM = 0.5
# A learned margin (``placement.stream_guard``: what this edge's predictions missed there
# lately) is a second bound: the prediction plus the margin may use all but this fraction of
# the objective. ``python -m benchmarks.tokens`` measures it (``switchyard-fixed-guard-band``,
# without it; ``switchyard-learned-band-only``, the margin instead of the fixed band).
GUARDED_HEADROOM = 0.05
# Nothing feasible: the stream is a best effort on the fastest deployment (lowest predicted
# TTFT + M × TPOT), or on the cheapest of those within this fraction of the fastest's sum
# (and of its TPOT, with a TPOT objective) that meet every objective the fastest meets
# (without that
# condition tokens-rag ×1, full horizon, fell from 99.29 to 99.03 %: TPOT misses given up for
# cost; with the sum alone, a short stream asking a TPOT nothing met could go to a GPU 4×
# slower per token whose TTFT made the sum close; within the band on TTFT too, full-horizon
# tokens-slowdown cost $2.653 per 1M instead of $2.539: a cheaper H100 farther away no
# longer took the long prompts).
# The fastest alone sent long prompts that fit nowhere to whichever H100 was a few ms faster,
# at a batch of one or two: 17 % of tokens-slowdown's cost for 3 % of its streams (quick
# horizon). Chosen on tokens-chat/-code (``--quick --only switchyard --scale``, ×1/×1.5/
# ×2, against 0): 0.1 kept their attainment at ×1 and ×1.5 (chat $1.687 → 1.681 and $1.927
# → 1.872 per 1M, code $7.100 → 7.104 and $7.868 → 7.841), at ×2 chat 98.92 → 98.99 % and
# code 98.77 → 98.65 % (below 99 % either way); 0.25 (before the condition) took code ×2 to
# 98.21 %. Measured and not kept (code removed): a second feasibility tier
# before the best effort, the objective less 25 % instead of 50 % (code ×1.5 99.19 →
# 98.98 %); a TTFT reserve of k × the edge's mean uncached prompt at the deployment's
# prefill rate on top of (or instead of part of) the band (quick ×1, chat/code: 20 % + 0.5
# prompts 99.14/99.31 % at $1.51/$7.09, 30 % + 0.5 99.57/99.69 % at $1.75/$7.53, 10 % + 1
# 99.38/99.69 % at $2.28/$8.97, against 99.57/99.50 % at $1.68/$7.10: dearer or lower).
FALLBACK_BAND = 0.1
# ``choose_stream(unmeasured_probes=...)``, not the default: an unmeasured deployment (no
# estimate: predicted at its table p95, cost 0, so the cheapest) feasible only while this edge
# has fewer than this many streams on it, one probe at a time until it is measured. Without
# it every stream an edge routes before its first one ends goes to the same unmeasured GPU (on
# tokens-rag ×2, quick, one T4 got 36 streams of up to 7,400 prompt tokens in 10 s, a 66 s
# prefill queue). With it the warm-up's TTFT misses fell 2-7× (quick, ×1 and ×2; tokens-code
# ×2 197 → 43 of 474) and the longest TTFT from 12-153 s to 2-10 s, full horizon ×1 chat,
# code and slowdown higher and rag 99.39 → 99.24 %, cheaper in 13 of 16 cases; but over two
# seeds (``benchmarks.tokens``' seed check) tokens-chat ×1.5 fell 99.45 → 99.37 % on the
# mean against a 0.01-point spread between the seeds: not kept by the rule.
UNMEASURED_PROBES = 1
# ``choose_stream(share_batch=False)`` (issue 14, not the default): the decode priced as if
# the stream ran alone, not shared with this edge's own streams there (÷ (load + 1), which
# discounts the deployments this edge uses against those other edges fill). Quick seed check
# (``benchmarks.tokens``' ``switchyard-list-cost``): cheaper on the mean in 14 of 16 cases,
# within both higher beyond the seeds' spread in 3, lower in 2 (chat ×1.5 −0.01, code ×1.5
# −0.09 points): not kept by the rule.
SHARE_BATCH = True


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """What the edge learned of one deployment's token speed and price."""

    prefill_ms_per_token: float
    tpot_base_ms: float
    tpot_per_stream_ms: float
    usd_per_second: float


@dataclass(frozen=True, slots=True)
class FleetQueue:
    """A deployment's prefill queue as the fleet last reported it: ``waiting_tokens``, the
    uncached prompt tokens of the streams (every edge's) its server had not yet given a
    first token when the agent sampled it; ``own_tokens``, this edge's own pending tokens
    there at that sample's time (what of the report is already in ``pending``). A report
    is about one telemetry interval plus a push old: streams sent since are in ``pending``
    only, streams served since are still in the report. ``streams`` / ``own_streams``: the
    streams the server held (waiting or decoding) and this edge's of them then; used only
    when ``choose_stream(fleet_load=True)``."""

    waiting_tokens: int
    own_tokens: int = 0
    streams: int = 0
    own_streams: int = 0

    @property
    def others_streams(self) -> int:
        """The other edges' streams on the server when it was sampled (≥ 0)."""
        return max(self.streams - self.own_streams, 0)

    @property
    def others_tokens(self) -> int:
        """The other edges' part of the report (never negative: this edge's share may
        have been counted larger than the server did, e.g. streams still on the wire)."""
        return max(self.waiting_tokens - self.own_tokens, 0)


@dataclass(frozen=True, slots=True)
class StreamAsk:
    """What one stream asks for."""

    prompt_tokens: int
    max_tokens: int
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    session_key: str = ""
    holder: str = ""  # the deployment that served this session's prefix last ("" = none)
    cached_tokens: int = 0  # prompt tokens the holder is expected to have cached


@dataclass(frozen=True, slots=True)
class StreamOption:
    """One deployment's prediction for the stream, with why it was or was not chosen."""

    candidate: Candidate
    ttft_ms: float
    tpot_ms: float
    cost_usd: float
    feasible: bool
    measured: bool
    cache_hit_tokens: int
    load: int
    bound: int
    margin_ms: float = 0.0  # the learned TTFT margin added to the prediction (0: none)
    ttft_limit_ms: float = math.inf  # the predicted TTFT it had to be under to be feasible
    others_tokens: int = 0  # other edges' queued prefill tokens in the TTFT (``fleet``)


@dataclass(frozen=True, slots=True)
class StreamChoice:
    candidate: Candidate
    slo_met: bool
    reason: str
    options: tuple[StreamOption, ...]

    @property
    def chosen(self) -> StreamOption:
        return next(o for o in self.options if o.candidate is self.candidate)


def predict(c: Candidate, est: TokenEstimate | None, load: int, ask: StreamAsk,
            pending_tokens: int = 0, ttft_headroom: float = TTFT_HEADROOM,
            margin_ms: float | None = None, tpot_factor: float = 1.0,
            others_tokens: int = 0, probes: int | None = None,
            share_batch: bool = SHARE_BATCH, shared_by: int | None = None) -> StreamOption:
    """One deployment's predicted TTFT, TPOT and cost for ``ask`` (see the module docstring).
    The prediction must fit the objective less ``ttft_headroom``; with ``margin_ms``, the
    deployment's learned TTFT margin (``stream_guard``), the prediction plus the margin must
    also fit the objective less ``GUARDED_HEADROOM``. ``others_tokens``: other edges' prompt
    tokens queued there before this stream (``FleetQueue.others_tokens``). An unmeasured
    deployment is feasible while it holds fewer than ``probes`` of this edge's streams (None:
    always). ``shared_by``: the other streams its decode is priced as shared with (None:
    ``load``, this edge's own)."""
    hit = min(ask.cached_tokens, ask.prompt_tokens) if c.deployment_id == ask.holder else 0
    if est is None:
        return StreamOption(c, c.latency_p95_ms, 0.0, 0.0, probes is None or load < probes,
                            False, hit, load, 0)
    prefill = (ask.prompt_tokens - hit) * est.prefill_ms_per_token
    tpot = (est.tpot_base_ms + est.tpot_per_stream_ms * load) * tpot_factor
    others = load if shared_by is None else shared_by
    cost = est.usd_per_second * (prefill + ask.max_tokens * tpot
                                 / ((others + 1) if share_batch else 1)) / 1000.0
    queued = max(pending_tokens, 0) + max(others_tokens, 0)
    ttft = c.rtt_ms + queued * est.prefill_ms_per_token + prefill
    margin = margin_ms or 0.0
    limit = math.inf
    if ask.ttft_ms is not None:
        limit = ask.ttft_ms * (1.0 - ttft_headroom)
        if margin_ms is not None:
            limit = min(limit, ask.ttft_ms * (1.0 - GUARDED_HEADROOM) - margin)
    feasible = ttft <= limit and (ask.tpot_ms is None or tpot <= ask.tpot_ms)
    return StreamOption(c, ttft, tpot, cost, feasible, True, hit, load, 0, margin, limit,
                        max(others_tokens, 0))


def ring_order(key: str, deployments: Sequence[str]) -> list[str]:
    """``deployments`` in the order a session's key meets them on the hash ring."""
    if not key:
        return sorted(deployments)
    point = zlib.crc32(key.encode())
    first: dict[str, int] = {}
    for d in deployments:
        dist = min((zlib.crc32(f"{d}#{i}".encode()) - point) % (1 << 32)
                   for i in range(RING_POINTS))
        first[d] = dist
    return sorted(deployments, key=lambda d: (first[d], d))


def load_bound(loads: Mapping[str, int], deployments: Sequence[str],
               factor: float = LOAD_FACTOR) -> int:
    """The most streams one deployment may hold for affinity: ``ceil(c × (m + 1) / n)``."""
    total = sum(loads.get(d, 0) for d in deployments) + 1
    return max(1, math.ceil(factor * total / max(len(deployments), 1)))


def choose_stream(cands: Sequence[Candidate], estimates: Mapping[str, TokenEstimate],
                  loads: Mapping[str, int], ask: StreamAsk, band: float = COST_BAND,
                  load_factor: float = LOAD_FACTOR,
                  pending: Mapping[str, int] | None = None,
                  ttft_headroom: float = TTFT_HEADROOM,
                  ttft_margins: Mapping[str, float] | None = None,
                  tpot_factors: Mapping[str, float] | None = None,
                  fleet: Mapping[str, FleetQueue] | None = None,
                  fleet_load: bool = False,
                  fallback_band: float = FALLBACK_BAND,
                  max_cost_usd: float = math.inf,
                  unmeasured_probes: int | None = None,
                  share_batch: bool = SHARE_BATCH,
                  shared_by: Mapping[str, int] | None = None) -> StreamChoice:
    """The deployment for one stream (``cands`` already passed the call's hard filters).
    ``pending``: per deployment, the uncached prompt tokens of this edge's streams there that
    still wait for their first token (none known: empty). ``ttft_headroom``: the fraction of
    the TTFT objective a prediction must leave free to count as feasible, for a deployment
    without a learned margin. ``ttft_margins``: per deployment, the TTFT margin (ms) the edge
    learned from its predictions' misses (``placement.stream_guard.TtftGuard.margins``).
    ``tpot_factors``: per deployment, how much slower than predicted this edge's streams
    decoding there now are (``placement.stream_guard.tpot_factors``; the TPOT prediction is
    multiplied by it). ``fleet``: per deployment, its prefill queue as placement last put it
    on the route rows (``FleetQueue``); the other edges' part of it waits before this stream
    too (none reported: only this edge's ``pending`` counts). ``fleet_load``: the TPOT and
    cost predictions also count the other edges' streams there (``FleetQueue.others_streams``)
    in the batch the stream joins (the TPOT line must then be learned against the same
    count); the load bound still counts this edge's streams only. ``fallback_band``: with
    nothing feasible, how much slower than the fastest (TTFT + M × TPOT) the best effort may
    be, in TTFT + M × TPOT and in TPOT when asked, if it is cheaper and meets every
    objective the fastest meets (0: the fastest). ``max_cost_usd``: the caller's cap
    (``x-max-cost-usd``); a deployment whose predicted stream cost is over it is not an
    option (one not yet measured predicts 0: the edge stops such a stream at the cap).
    ``share_batch``: the predicted cost shares the decode with this edge's own streams there
    (÷ (load + 1), the default); False prices it as if the stream ran alone (measured by
    ``benchmarks.tokens``' ``switchyard-list-cost``, ``SHARE_BATCH``; the cap compares the
    same prediction). ``shared_by``: per deployment, how many other streams the decode is
    priced as shared with (absent: this edge's own ``loads``; measured with the servers'
    true streams, every edge's, by ``benchmarks.tokens``' ``switchyard-oracle-*``: not kept).
    ``unmeasured_probes``: an unmeasured deployment is feasible while this edge has fewer
    than this many streams on it, and with nothing feasible the best effort is among the
    measured deployments when there is one (None, the default: always feasible; measured by
    ``benchmarks.tokens``' ``switchyard-one-probe``, ``UNMEASURED_PROBES``)."""
    if not cands:
        raise NoHealthyDeployment("no deployment may serve this stream")
    queued, margins, slower = pending or {}, ttft_margins or {}, tpot_factors or {}
    reported = fleet or {}
    batch = fleet_loads(loads, reported) if fleet_load else loads
    predicted = [predict(c, estimates.get(c.deployment_id), batch.get(c.deployment_id, 0), ask,
                         queued.get(c.deployment_id, 0), ttft_headroom,
                         margins.get(c.deployment_id), slower.get(c.deployment_id, 1.0),
                         _others(reported.get(c.deployment_id)), unmeasured_probes,
                         share_batch, (shared_by or {}).get(c.deployment_id))
                 for c in cands]
    if max_cost_usd < math.inf:
        predicted = affordable(predicted, ask, max_cost_usd)
        cands = [o.candidate for o in predicted]
    feasible_ids = [o.candidate.deployment_id for o in predicted if o.feasible]
    bound = load_bound(loads, _cheapest_tier(feasible_ids, estimates, band) or
                       [c.deployment_id for c in cands], load_factor)
    options = tuple(_bounded(o, bound, loads.get(o.candidate.deployment_id, 0))
                    for o in predicted)
    feasible = [o for o in options if o.feasible]
    if not feasible:
        def total(o: StreamOption) -> float:
            return o.ttft_ms + o.margin_ms + ask.max_tokens * o.tpot_ms

        # an unmeasured deployment predicts no decode time: the best effort trusts it only
        # when nothing is measured (else every best effort would pile onto the busy probe)
        pool = ([o for o in options if o.measured] if unmeasured_probes is not None
                else []) or list(options)
        fastest = min(pool, key=lambda o: (total(o), o.cost_usd))
        near = [o for o in pool if _near(o, fastest, ask, fallback_band)
                and total(o) <= total(fastest) * (1.0 + fallback_band)
                and _keeps(o, fastest, ask)]
        best = min(near, key=lambda o: (o.cost_usd, total(o)))
        return StreamChoice(best.candidate, False,
                            "no deployment meets the stream's objectives: the fastest"
                            + (f" (the cheapest within {fallback_band:.0%} of it)"
                               if fallback_band > 0 else ""), options)
    under = [o for o in feasible if o.load < bound]
    if not under:
        best = min(feasible, key=lambda o: (o.load, o.cost_usd))
        return StreamChoice(best.candidate, True,
                            "every feasible deployment is at the load bound: least loaded",
                            options)
    cheapest = min(o.cost_usd for o in under)
    limit = cheapest * (1.0 + band)
    in_band = {o.candidate.deployment_id: o for o in under if o.cost_usd <= limit}
    if ask.holder in in_band:
        return StreamChoice(in_band[ask.holder].candidate, True,
                            "the session's prefix holder: feasible, under the load bound and "
                            "among the cheapest", options)
    d = ring_order(ask.session_key, list(in_band))[0]
    return StreamChoice(in_band[d].candidate, True,
                        "cheapest feasible under the load bound; first in the session's "
                        "hash order", options)


def after_refusal(choice: StreamChoice, refused: Collection[str],
                  waited_ms: float = 0.0) -> StreamChoice | None:
    """The next deployment for a stream the servers in ``refused`` (deployment ids) refused
    to admit (a server's own admission check: it cannot start and pace the stream within its
    objectives). A refusal is not a failure: nothing is excluded beyond the refused
    deployments themselves, no backend or region is marked, and the next try is the cheapest
    feasible option left (``choice.options``, as ``choose_stream`` predicted them) whose
    predicted TTFT plus ``waited_ms`` (the round trips the refusals cost) still fits its
    limit (``StreamOption.ttft_limit_ms``). None when
    no feasible option is left: the caller then sends its best effort (the least bad
    prediction of those not refused) or gives up. Measured only in the simulator
    (``benchmarks.tokens --only switchyard-admit*``, ``benchmarks/costsim/tokens_admit.py``)."""
    left = [o for o in choice.options
            if o.feasible and o.candidate.deployment_id not in refused
            and o.ttft_ms + waited_ms <= o.ttft_limit_ms]
    if not left:
        return None
    best = min(left, key=lambda o: (o.cost_usd, o.ttft_ms))
    return StreamChoice(best.candidate, True,
                        f"refused by {len(refused)} server(s): the cheapest feasible left",
                        choice.options)


def affordable(options: Sequence[StreamOption], ask: StreamAsk,
               max_cost_usd: float) -> list[StreamOption]:
    """The options whose predicted cost for ``ask`` is within the caller's cap; none: the
    cap excludes every deployment (``PolicyUnsatisfiable``, naming each one's prediction)."""
    kept = [o for o in options if o.cost_usd <= max_cost_usd]
    if kept:
        return kept
    cheapest = min(options, key=lambda o: o.cost_usd)
    raise PolicyUnsatisfiable(
        f"x-max-cost-usd {max_cost_usd:g}: no deployment is predicted to serve this stream "
        f"({ask.prompt_tokens} prompt tokens, {ask.max_tokens} output tokens) within it; the "
        f"cheapest, {cheapest.candidate.deployment_id}, predicts ${cheapest.cost_usd:.10f}",
        best_quality=max(o.candidate.quality for o in options),
        lowest_cost_usd=cheapest.cost_usd,
        regions=tuple(sorted({o.candidate.region for o in options})),
        removed={o.candidate.deployment_id:
                 f"predicted stream cost ${o.cost_usd:.10f} > cap ${max_cost_usd:.10f}"
                 for o in options})


def _near(o: StreamOption, fastest: StreamOption, ask: StreamAsk, band: float) -> bool:
    """With a TPOT objective, ``o``'s predicted TPOT is within ``band`` of ``fastest``'s (a
    short stream's sum is mostly TTFT, which would hide a much slower decode)."""
    return ask.tpot_ms is None or o.tpot_ms <= fastest.tpot_ms * (1.0 + band)


def _keeps(o: StreamOption, fastest: StreamOption, ask: StreamAsk) -> bool:
    """``o`` is predicted to meet each objective ``fastest`` is predicted to meet (the whole
    objective, no headroom): a best effort cheaper than the fastest gives up neither."""
    if ask.ttft_ms is not None and fastest.ttft_ms + fastest.margin_ms <= ask.ttft_ms < (
            o.ttft_ms + o.margin_ms):
        return False
    return not (ask.tpot_ms is not None and fastest.tpot_ms <= ask.tpot_ms < o.tpot_ms)


def _cheapest_tier(feasible: Sequence[str], estimates: Mapping[str, TokenEstimate],
                   band: float) -> list[str]:
    """The bins of the bounded-load hashing: the feasible deployments priced (per GPU-second)
    within ``band`` of the cheapest feasible one; an unmeasured one is priced 0."""
    price = {d: (estimates[d].usd_per_second if d in estimates else 0.0) for d in feasible}
    if not price:
        return []
    limit = min(price.values()) * (1.0 + band)
    return [d for d in feasible if price[d] <= limit]


def fleet_loads(loads: Mapping[str, int], fleet: Mapping[str, FleetQueue]) -> dict[str, int]:
    """Per deployment, this edge's streams there plus the other edges' as last reported."""
    out = dict(loads)
    for d, q in fleet.items():
        out[d] = out.get(d, 0) + q.others_streams
    return out


def _others(q: FleetQueue | None) -> int:
    return q.others_tokens if q is not None else 0


def _bounded(o: StreamOption, bound: int, load: int) -> StreamOption:
    return StreamOption(o.candidate, o.ttft_ms, o.tpot_ms, o.cost_usd, o.feasible, o.measured,
                        o.cache_hit_tokens, load, bound, o.margin_ms, o.ttft_limit_ms,
                        o.others_tokens)


def explain(choice: StreamChoice) -> list[str]:
    """One line per deployment: predictions and the verdict (for ``switchyard explain``)."""
    lines = []
    for o in choice.options:
        mark = "→" if o.candidate is choice.candidate else " "
        state = "feasible" if o.feasible else "misses an objective"
        lines.append(
            f"{mark} {o.candidate.deployment_id}: TTFT {o.ttft_ms:.1f} ms, TPOT "
            f"{o.tpot_ms:.2f} ms, ${o.cost_usd:.8f}, load {o.load}/{o.bound}, cache hit "
            f"{o.cache_hit_tokens} tokens, "
            + (f"other edges' queue {o.others_tokens} tokens, " if o.others_tokens else "")
            + f"{'measured' if o.measured else 'unmeasured'}, {state}")
    lines.append(f"chose {choice.candidate.deployment_id}: {choice.reason}")
    return lines
