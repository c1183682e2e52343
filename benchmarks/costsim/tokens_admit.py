"""Switchyard's edge with servers that refuse what they cannot serve in time (issue 14).

``SwitchyardAdmit`` is the simulated edge (``tokens_policies.Switchyard``: its own learned
estimates, its own streams, ``choose_stream``) with a server-side admission check in front of
every model server: a server admits a stream only when its own state — every edge's streams
there and on their way, its speed now, each stream's ``max_tokens`` for its length (a server
does not know how long a generation will run, only where it stops), no speed noise — says
it meets both objectives less ``slack`` and no stream there misses one
(``tokens_oracle.CheapestFeasibleOracle.admits``, the oracle's ``-admit`` check). A refusal
costs the edge a round trip to that server (``route_delay_ms``: the simulator sends the
stream that much later and its TTFT counts it); the edge then tries
``placement.streams.after_refusal`` (the cheapest feasible option left, a deployment whose
predicted TTFT plus the time already lost no longer fits its limit dropped), at most
``tries`` servers, then its best effort among those that did not refuse. Nothing is marked
failed. ``headroom``: the share of the TTFT objective the edge's own prediction leaves free
(``choose_stream``'s ``ttft_headroom``; the default edge's 0.5 covers other edges' prefills
it cannot see, which the server's check now covers).
"""

from __future__ import annotations

import dataclasses

from benchmarks.costsim.tokens_oracle import CheapestFeasibleOracle, View
from benchmarks.costsim.tokens_policies import Switchyard
from benchmarks.costsim.tokensim import TokenSim
from placement.streams import TTFT_HEADROOM, StreamAsk, StreamChoice, after_refusal

ADMIT_SLACK = 0.3  # the share of each objective the server's check leaves free
ADMIT_TRIES = 3  # servers tried before the edge's best effort


class SwitchyardAdmit(Switchyard):
    def __init__(self, sim: TokenSim, name: str, slack: float = ADMIT_SLACK,
                 headroom: float = TTFT_HEADROOM, tries: int = ADMIT_TRIES) -> None:
        super().__init__(sim, name, ttft_headroom=headroom)
        self._check = CheapestFeasibleOracle(sim, name, ttft_slack=slack, tpot_slack=slack,
                                             max_tokens=True)
        self._server = View(max_tokens=tuple(sim.s.classes[int(k)].max_tokens
                                             for k in sim.streams.klass))
        self._tries = tries
        self._delay: dict[int, float] = {}
        self._held: dict[int, float] = {}  # until it finishes: its TTFT less this is learned
        self.refused = 0
        self.refused_out = 0  # streams every tried server refused (sent as a best effort)

    def admitted(self, sid: int, edge: int, now: float, sim: TokenSim, choice: StreamChoice,
                 ask: StreamAsk) -> StreamChoice:
        delay, refused = 0.0, set[str]()
        current: StreamChoice | None = choice if choice.slo_met else None
        index = self.index
        while current is not None and len(refused) < self._tries:
            d = index[current.candidate.deployment_id]
            if self._check.admits(sim, sid, edge, d, now, delay, self._server):
                return self._sent(sid, edge, d, now, delay, sim, current)
            refused.add(current.candidate.deployment_id)
            self.refused += 1
            delay += float(sim.rtt[edge, d])
            current = after_refusal(choice, refused, waited_ms=delay)
        if not refused:  # nothing feasible: choose_stream's best effort, unchecked
            return self._sent(sid, edge, index[choice.candidate.deployment_id], now, 0.0, sim,
                              choice)
        self.refused_out += 1
        left = [o for o in choice.options if o.candidate.deployment_id not in refused]
        best = min(left or choice.options,
                   key=lambda o: (o.ttft_ms + ask.max_tokens * o.tpot_ms, o.cost_usd))
        return self._sent(sid, edge, index[best.candidate.deployment_id], now, delay, sim,
                          dataclasses.replace(choice, candidate=best.candidate, slo_met=False,
                                              reason="refused by every server tried"))

    def _sent(self, sid: int, edge: int, d: int, now: float, delay: float, sim: TokenSim,
              choice: StreamChoice) -> StreamChoice:
        self._delay[sid] = delay
        if delay:
            self._held[sid] = delay
        self._check.sent(sid, d, now + delay + float(sim.rtt[edge, d]) / 2)
        return choice

    def route_delay_ms(self, sid: int) -> float:
        """How long ``sid``'s refusals held it before it left for its deployment."""
        return self._delay.pop(sid, 0.0)

    def held_ms(self, sid: int) -> float:
        return self._held.pop(sid, 0.0)
