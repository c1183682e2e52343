"""The simulated edge's moves (``tokens_policies.Switchyard``): each decoding stream's
``placement.stream_move.MoveWatch`` asked, as ``services/edge/generation.py`` asks it at each
token, whether to leave for a deployment predicted to meet its TPOT (``decide``: a rescue)
or, with ``handoffs``, a cheaper one its banked time pays the re-prefill of (``handoff``,
built and off); the move's options, and what the edge learns of the attempt it cancels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.costsim.tokens_workload import Deployment
from benchmarks.costsim.tokensim import TokenSim
from placement.stream_move import MoveWatch, move_options, stay_cost
from placement.streams import StreamAsk, StreamOption

if TYPE_CHECKING:
    from benchmarks.costsim.tokens_policies import Switchyard


def decide(p: Switchyard, edge: int, sid: int, d: int, watch: MoveWatch, now: float,
           sim: TokenSim) -> int:
    """Where ``edge`` moves stream ``sid`` (on deployment ``d``) now, as an index (-1: it
    stays); a move is counted and the stream's attempt there opened."""
    now_s = now / 1000.0
    stay = watch.stay_ms(now_s)
    if stay is None:
        return -1  # cheap exits before the options are predicted
    stats, here = p.stats[edge], sim.deployments[d]
    if stay <= watch.miss_ms:
        watch.decide(now_s, [])
        if not watch.handoff_due(now_s):
            return -1
        opts, context = options(p, edge, sid, here, watch, now, sim, handoff=True)
        est = stats.estimates([c for c in p.cands[edge] if c.deployment_id == here.id])
        n = watch.owed if p.handoff_owed else watch.handoff_tokens
        choice = watch.handoff(now_s, stay_cost(est.get(here.id),
                                                stats.inflight.get(here.id, 0), n), opts)
        p.handoffs += choice.target is not None
    elif watch.moves:
        return -1
    else:
        opts, context = options(p, edge, sid, here, watch, now, sim)
        choice = watch.decide(now_s, opts)
    if choice.target is None:
        return -1
    moved_away(p, sid, edge, d, now, watch.count, sim)
    dep = choice.target.deployment_id
    option = next(o for o in opts if o.candidate is choice.target)
    load = stats.started(dep)
    work = context - option.cache_hit_tokens
    p.pending[edge][dep] = p.pending[edge].get(dep, 0) + work
    p._open[sid] = (p.index[dep], load, option.cache_hit_tokens, work)
    p._tpot_pred[sid] = option.tpot_ms
    p._moved[sid] = (now, watch.count, -1.0)
    p.moves += 1
    return p.index[dep]


def options(p: Switchyard, edge: int, sid: int, here: Deployment, watch: MoveWatch,
            now: float, sim: TokenSim, handoff: bool = False
            ) -> tuple[list[StreamOption], int]:
    """Where the stream may move (its variant, not where it is) and its context tokens;
    ``handoff``: priced alone for ``handoff_tokens``, as ``MoveWatch.handoff`` asks."""
    stats = p.stats[edge]
    cands = [c for c in p.cands[edge]
             if c.variant == here.variant.name and c.deployment_id != here.id]
    first = p._ask[sid]
    context = int(sim.streams.prompt[sid]) + watch.count
    holder, seen = stats.holder(first.session_key)
    ask = StreamAsk(prompt_tokens=context,
                    max_tokens=(watch.handoff_tokens if handoff and not p.handoff_owed
                                else watch.owed),
                    tpot_ms=first.tpot_ms,
                    session_key=first.session_key, holder=holder,
                    cached_tokens=min(seen, context))
    return move_options(cands, stats.estimates(cands), stats.inflight, ask,
                        p.pending[edge] if p._use_pending else None,
                        p._running(edge, now, sim) if p._live_tpot else None,
                        share_batch=not handoff), context


def moved_away(p: Switchyard, sid: int, edge: int, d: int, now: float, count: int,
               sim: TokenSim) -> None:
    """What the edge learns of the attempt it cancels (its segment, as
    ``StreamMeter.segment_ended``)."""
    _, load, _, work = p._open.pop(sid)
    stats, dep = p.stats[edge], sim.deployments[d].id
    stats.ended(dep)
    p.decoding[edge].pop(sid, None)
    first, prefill = float(sim.out.first_ms[sid]), float(sim.out.ttft_ms[sid])
    rtt = float(sim.rtt[edge, d])
    if sid in p._moved:  # a handoff's target left in turn: from its own first token
        at, base, first = p._moved[sid]
        count, prefill = count - base, first + rtt / 2 - at
    tpot = (now - first) / (count - 1) if count > 1 else None
    stats.observe(dep, prefill_ms=prefill - rtt, uncached_tokens=max(work, 0),
                  tpot_ms=tpot, load=load)
