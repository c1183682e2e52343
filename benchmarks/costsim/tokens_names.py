"""The token simulation's policies by name: the main table's, Switchyard's ablations (the
same function without one of its parts) and the variants measured and rejected, each made
fresh for one run by ``make_policy`` (``benchmarks.tokens --only NAME``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from benchmarks.costsim.tokens_admit import SwitchyardAdmit
from benchmarks.costsim.tokens_baselines import (
    LeastLoaded,
    LowestLatency,
    PrefixAffinity,
    RoundRobin,
)
from benchmarks.costsim.tokens_oracle import CheapestFeasibleOracle
from benchmarks.costsim.tokens_policies import Switchyard
from benchmarks.costsim.tokensim import Policy, TokenSim
from placement.streams import UNMEASURED_PROBES

POLICIES = ("switchyard", "round-robin", "least-loaded", "prefix-affinity", "lowest-latency")
# Switchyard ablations: the same function without one of its inputs or its guard band
VARIANTS = ("switchyard-learned-margin", "switchyard-learned-band-only",
            "switchyard-no-guard-band", "switchyard-no-pending", "switchyard-live-tpot",
            "switchyard-no-move", "switchyard-fastest-fallback", "switchyard-one-probe",
            "switchyard-fleet", "switchyard-fleet-instant", "switchyard-list-cost")
# Measured once and rejected (``python -m benchmarks.tokens [--quick] --only NAME --scale S``;
# within both objectives, chat/code/rag/slowdown), kept runnable:
# - ``switchyard-move-slack10`` / ``-slack25``: a stream counts as missing only when staying
#   is predicted above the objective × 1.1 / × 1.25 (``MoveWatch(slack=...)``), to move fewer
#   streams: quick tokens-slowdown ×1 98.93 / 98.60 % against 99.37 % with slack 0 (fewer
#   of the caught streams saved: 29 / 14 moves against 40); chat ×2 98.87 / 99.32 % against
#   98.92 % (a few moves there change which streams miss more than how many);
# - ``switchyard-fleet-250ms``: ``switchyard-fleet`` with a report every 250 ms, usable
#   100 ms later: at ×1 (full horizon) 99.60/99.62/99.06/97.73 % (rag lower than
#   ``switchyard``'s 99.29 %: its TPOT misses, 99.59 % met); 5 of 12 load cases (quick);
# - ``switchyard-fleet-count``: ``switchyard-fleet`` from a count of streams waiting (as
#   Triton's ``nv_inference_pending_request_count``, which the agent already reads, would
#   give) times this edge's mean uncached prompt, not the server's tokens: about as good: at
#   ×1 (full) 99.54/99.48/98.98/97.62 %, 5 of 12 load cases (quick);
# - ``switchyard-fleet-rate``: ``switchyard-fleet`` with the prefill rate learned over the
#   work predicted ahead (own pending + other edges' reported + the stream's own uncached
#   tokens) instead of the stream's own tokens (the default rate absorbs the average queue
#   wait, so adding the reported queue counts it twice): quick ×1 99.48/99.12/98.69/96.95 %,
#   ×2 98.92/98.68/98.42/96.46 %;
# - ``switchyard-fleet-load``: ``switchyard-fleet`` whose TPOT and cost also count the other
#   edges' reported streams in the batch (``choose_stream(fleet_load=True)``, the TPOT line
#   learned against the same count): quick ×1 99.19/98.99/99.10/97.14 %, ×2
#   99.23/99.28/98.31/96.79 % (``switchyard-fleet``: 99.57/99.37/99.45/97.53,
#   98.99/99.37/98.31/97.10);
# - ``switchyard-fleet-work``: both of the last two: quick chat ×1/×2 99.09/98.26 % at
#   $1.758/$1.720 per 1M, and with ``ttft_headroom=0.3`` on top 96.85/95.40 %.
# - ``switchyard-handoff`` (``-ttft1``, ``-ttft75``, ``-owed``): each edge also hands an
#   on-pace stream to a cheaper deployment of its variant once its banked time pays for the
#   re-prefill (``MoveWatch.handoff``; the re-prefill's TTFT within 0.5 / 1 / 0.75 of the
#   stream's objective; ``-owed`` priced for all the tokens owed): full horizon, ``-owed``
#   6-9 % cheaper on slowdown at higher attainment but rag dearer on four seeds of four
#   (mean +2.3 %); ``-ttft75`` reclaim's two-seed mean 0.135 point lower (spread 0.13),
#   slowdown ×1.5 under 99 %; benchmarks/RESULTS.md, 'Tokens: issue 14 candidates',
#   2026-11-27, second round.
# - ``switchyard-oracle-decoding`` / ``-batch`` (issue 14, simulator only: no edge sees
#   this): each decode priced as shared with the server's true streams decoding (or held),
#   every edge's (``choose_stream(shared_by=...)``) instead of this edge's own; the edge's
#   price is 0.52-0.96 of the bill on the pools holding most of the $
#   (``benchmarks.tokens_price``), but priced at the true batch, full horizon, two seeds:
#   lower within both on four scenarios, dearer on a seed of three; RESULTS.md 'Tokens:
#   issue 14 candidates', 2026-11-27, third round.
REJECTED = ("switchyard-move-slack10", "switchyard-move-slack25", "switchyard-fleet-250ms",
            "switchyard-fleet-count", "switchyard-fleet-rate", "switchyard-fleet-load",
            "switchyard-fleet-work", "switchyard-fallback-band25", "switchyard-handoff",
            "switchyard-handoff-ttft1", "switchyard-handoff-ttft75", "switchyard-handoff-owed",
            "switchyard-oracle-decoding", "switchyard-oracle-batch", *(
                # issue 14, fifth round: the servers refuse what they cannot serve in time
                # (``tokens_admit``, checked with max_tokens for lengths, 30 % of each
                # objective left free); ``-hN``: the edge's own TTFT headroom N % (not 50 %)
                # ``-tN``: N servers tried before the best effort (not 3). ``-h30-t6`` passes the
                # keep rule on all five scenarios, two seeds, both horizons (simulator only: no
                # server half exists live); the others not kept (RESULTS.md, fifth round)
                "switchyard-admit", "switchyard-admit-h30", "switchyard-admit-h10",
                "switchyard-admit-h30-t6", "switchyard-admit-h30-t10", "switchyard-admit-h20-t6",
                "switchyard-admit-h40-t6"))

# Issue 14's bound (simulator only: true state of every server, the stream's own length):
# per stream the cheapest deployment whose emulated TTFT and TPOT meet the objectives with a
# slack (``-slackN``: N % of each objective left for later arrivals), hurting no stream there
# (``benchmarks/costsim/tokens_oracle.py``); ``-marginal`` priced at the GPU time it adds,
# ``-move`` also moving streams a slowdown caught. Its ablations (``tokens_oracle.View``), each
# ``-slack20`` without one piece of what it knows: ``-own-edge`` (only the choosing edge's
# streams on each server), ``-max-tokens`` (every stream's max_tokens, not its length, no
# speed noise), ``-nominal`` (listed speeds, no slowdown seen), ``-blind`` (all three);
# ``-ttftM``: M % of the TTFT objective left unused instead of the slack's. What an edge could
# come to know late: ``-fleet1250`` (its own streams and the other edges' routed ≥ 1.25 s ago:
# a 1 s report 250 ms late), ``-slow2s`` (a slowdown's speed 2 s after it began),
# ``-observable`` (both, and max_tokens for lengths); ``-admit``: chosen on the view, each
# server refusing (one round trip lost) what its true state cannot serve in time.
ORACLE_VIEWS = ("", "-own-edge", "-max-tokens", "-nominal", "-blind", "-fleet1250", "-slow2s",
                "-observable", "-own-edge-admit", "-observable-admit")
ORACLES = ("cheapest-feasible-oracle", "cheapest-feasible-oracle-move-slack20",
           "cheapest-feasible-oracle-marginal-slack20",
           *(f"cheapest-feasible-oracle-slack{k}{t}{v}" for k in (10, 20, 30, 40)
             for t in ("", "-ttft35", "-ttft50", "-ttft65") for v in ORACLE_VIEWS))
_ORACLE = re.compile(r"cheapest-feasible-oracle(-move)?(-marginal)?(?:-slack(\d+))?"
                     r"(?:-ttft(\d+))?(-own-edge|-max-tokens|-nominal|-blind|-fleet1250|-slow2s|-observable)?"
                     r"(-admit)?$")


def _oracle(sim: TokenSim, name: str) -> Policy:
    """``-slackN``: N % of each objective left unused; ``-ttftM``: M % of the TTFT's."""
    m = _ORACLE.match(name)
    assert m is not None, name
    slack = int(m[3] or 0) / 100.0
    view = m[5] or ""
    blind, seen = view == "-blind", view == "-observable"
    fleet = seen or view == "-fleet1250"
    return CheapestFeasibleOracle(sim, name, tpot_slack=slack,
                                  ttft_slack=int(m[4]) / 100.0 if m[4] else slack,
                                  marginal=bool(m[2]), move=bool(m[1]),
                                  own_edge=blind or fleet or view == "-own-edge",
                                  max_tokens=blind or seen or view == "-max-tokens",
                                  nominal=blind or view == "-nominal",
                                  others_after_ms=1250.0 if fleet else math.inf,
                                  slow_seen_ms=2000.0 if seen or view == "-slow2s" else math.inf,
                                  admit=bool(m[6]))


def make_policy(name: str, sim: TokenSim, seed: int) -> Policy:
    """A fresh policy for one run on ``sim``."""
    makers: dict[str, Callable[[], Policy]] = {
        "switchyard": lambda: Switchyard(sim),
        "switchyard-learned-margin": lambda: Switchyard(sim, name, guard=True),
        "switchyard-learned-band-only": lambda: Switchyard(sim, name, ttft_headroom=0.0,
                                                           guard=True),
        "switchyard-no-guard-band": lambda: Switchyard(sim, name, ttft_headroom=0.0),
        "switchyard-no-pending": lambda: Switchyard(sim, name, pending=False),
        "switchyard-live-tpot": lambda: Switchyard(sim, name, live_tpot=True),
        "switchyard-no-move": lambda: Switchyard(sim, name, move=False),
        "switchyard-move-slack10": lambda: Switchyard(sim, name, move_slack=0.1),
        "switchyard-move-slack25": lambda: Switchyard(sim, name, move_slack=0.25),
        "switchyard-fleet": lambda: Switchyard(sim, name, fleet=True),
        "switchyard-fastest-fallback": lambda: Switchyard(sim, name, fallback_band=0.0),
        "switchyard-one-probe": lambda: Switchyard(sim, name, probes=UNMEASURED_PROBES),
        "switchyard-fallback-band25": lambda: Switchyard(sim, name, fallback_band=0.25),
        "switchyard-fleet-instant": lambda: Switchyard(sim, name, fleet=True,
                                                       report_every_ms=50.0, push_delay_ms=0.0),
        "switchyard-fleet-250ms": lambda: Switchyard(sim, name, fleet=True,
                                                     report_every_ms=250.0, push_delay_ms=100.0),
        "switchyard-fleet-count": lambda: Switchyard(sim, name, fleet=True, fleet_count=True),
        "switchyard-fleet-rate": lambda: Switchyard(sim, name, fleet=True, fleet_work=True),
        "switchyard-fleet-load": lambda: Switchyard(sim, name, fleet=True, fleet_load=True),
        "switchyard-fleet-work": lambda: Switchyard(sim, name, fleet=True, fleet_load=True,
                                                    fleet_work=True),
        "switchyard-list-cost": lambda: Switchyard(sim, name, share_batch=False),
        "switchyard-admit": lambda: SwitchyardAdmit(sim, name),
        "switchyard-admit-h30": lambda: SwitchyardAdmit(sim, name, headroom=0.3),
        "switchyard-admit-h10": lambda: SwitchyardAdmit(sim, name, headroom=0.1),
        "switchyard-admit-h30-t6": lambda: SwitchyardAdmit(sim, name, headroom=0.3, tries=6),
        "switchyard-admit-h30-t10": lambda: SwitchyardAdmit(sim, name, headroom=0.3,
                                                            tries=10),
        "switchyard-admit-h20-t6": lambda: SwitchyardAdmit(sim, name, headroom=0.2, tries=6),
        "switchyard-admit-h40-t6": lambda: SwitchyardAdmit(sim, name, headroom=0.4, tries=6),
        "switchyard-handoff": lambda: Switchyard(sim, name, handoffs=1),
        "switchyard-handoff-owed": lambda: Switchyard(sim, name, handoffs=1, handoff_owed=True),
        "switchyard-handoff-ttft1": lambda: Switchyard(sim, name, handoffs=1, handoff_ttft=1.0),
        "switchyard-handoff-ttft75": lambda: Switchyard(sim, name, handoffs=1,
                                                        handoff_ttft=0.75),
        "switchyard-oracle-batch": lambda: Switchyard(sim, name, shared_by="inflight"),
        "switchyard-oracle-decoding": lambda: Switchyard(sim, name, shared_by="decoding"),
        "round-robin": RoundRobin,
        "least-loaded": LeastLoaded,
        "prefix-affinity": lambda: PrefixAffinity(seed),
        "lowest-latency": LowestLatency,
    }
    if name in ORACLES:
        return _oracle(sim, name)
    if name not in makers:
        raise ValueError(f"unknown policy {name!r}; one of "
                         f"{POLICIES + VARIANTS + REJECTED + ORACLES}")
    return makers[name]()
