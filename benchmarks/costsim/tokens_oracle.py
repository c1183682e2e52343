"""``cheapest-feasible-oracle``: a bound on what per-stream cheapest-feasible routing could
cost (issue 14), in the token simulation only. No edge can run it.

For each stream, at the moment it is routed, the oracle emulates every server forward from
its **true** state (``tokensim.Server``: its FIFO queue, the stream prefilling and when it
ends, the batch decoding with each stream's true tokens left and speed noise, the prefix
cache, a slowdown already in force) plus the streams already routed to it and still
travelling (every edge's), with this stream added at its arrival (``rtt / 2`` later), by the
simulator's own rules (one prefill at a time, admission while the batch has room, decode
``tpot(n)`` shared by the batch). It also knows the stream itself: its true output length and
speed noise (more than a router has: ``max_tokens`` only). It does not know the streams
that arrive later (they join the batches and slow the decode) or a slowdown still to come.

A deployment is **feasible** when the emulated TTFT is within ``(1 − ttft_slack)`` of the
stream's TTFT objective and its TPOT within ``(1 − tpot_slack)`` of its TPOT objective, and no
stream already there (or on its way) that the emulation without this stream sees meeting
both objectives misses one with it. Among the feasible it picks the **cheapest**: by default
the stream's own bill as the emulation runs it (its prefill plus its share ``∫ dt / n`` of
the decode, the simulator's billing rule); ``marginal`` prices instead the GPU time the
stream adds to the server (busy time with it − without it; idle time is billed to no one, so
the sum of these is the fleet's bill). Nothing feasible: the deployment with the smallest
``max(TTFT / objective, TPOT / objective)`` (then the cheapest).

With ``move`` it also moves, every ``MOVE_CHECK_MS``, a decoding stream whose emulated TPOT on
its server now misses its objective (a slowdown caught it) to the cheapest feasible other
deployment, once, as the simulator's resumption does (re-prefill of prompt + delivered).

With ``admit`` the choice is the view's (``View``: what one edge can know) but each server
admits a stream only when its true state says it can serve it in time (a server-side
admission check an edge could get as a refusal; the server knows every stream it holds and
its speed, and the lengths as the view does): the edge tries its view's feasible
deployments cheapest first, each refusal costing a round trip to that server
(``route_delay_ms``: the simulator sends the stream that much later).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from benchmarks.costsim.tokens_policies import MOVE_CHECK_MS
from benchmarks.costsim.tokensim import TokenSim

INF = math.inf
ADMIT_TRIES = 3  # ``-admit``: the servers an edge tries before its view's fallback


@dataclass(slots=True)
class Emulated:
    """One server's future as emulated from now: per stream its first-token and last-token
    server times and the tokens it decodes between them (as the view knows them), the new
    stream's own decode share, and the server's busy GPU ms."""

    first: dict[int, float]
    done: dict[int, float]
    tokens: dict[int, float]  # tokens after the first, as the view counts them
    share_ms: float  # the added stream's ∫ dt / n over its decode
    prefill_ms: float  # the added stream's prefill
    busy_ms: float  # prefill + decode-busy time from now until every stream is done


@dataclass(frozen=True, slots=True)
class View:
    """What the emulation is allowed to know (the ablations of the oracle). The default is
    everything: every edge's streams, each stream's true length and speed noise, the
    server's speed now (a slowdown in force). ``edge``: only that edge's own streams (what
    one edge knows it put there); ``max_tokens``: per stream its ``max_tokens`` instead of its
    true length (less the tokens it delivered) and no speed noise; ``nominal``: the server's
    listed speed, as if no slowdown had happened. What an edge could come to know, late:
    ``others_after_ms``: with ``edge``, the other edges' streams routed at least that long
    ago are seen too (a fleet report's age: what it cannot show is the newest streams);
    ``slow_seen_ms``: a slowdown is seen that long after it began (its streams' pace), its
    listed speed before."""

    edge: int = -1
    max_tokens: tuple[int, ...] = ()
    nominal: bool = False
    others_after_ms: float = math.inf
    slow_seen_ms: float = math.inf


ALL = View()


def emulate(sim: TokenSim, d: int, now: float, arrivals: list[tuple[float, int]],
            add: int = -1, view: View = ALL) -> Emulated:
    """Server ``d`` from ``now`` on: its state as ``view`` sees it, then ``arrivals``
    ((time, stream), sorted) joining its queue; ``add`` is the stream whose prefill and decode
    share are returned (or -1). Cache evictions during the emulation are ignored."""
    srv = sim.servers[d]
    dep = sim.deployments[d] if view.nominal else srv.dep
    if dep is not sim.deployments[d] and view.slow_seen_ms < math.inf:
        began = max((w.at_s * 1000.0 for w in sim.s.slowdowns
                     if dep.id.startswith(w.prefix) and w.at_s * 1000.0 <= now), default=now)
        if now - began < view.slow_seen_ms:
            dep = sim.deployments[d]
    max_batch = dep.accelerator.max_batch
    tp = [dep.tpot_ms(k) for k in range(max_batch + 2)]
    st = sim.streams
    noise, session, shared, region = st.noise, st.session, st.shared, st.region
    mine = view.edge
    seen_before = now - view.others_after_ms  # other edges' streams routed by then are seen
    t_ms = st.t_ms

    def hidden(s: int) -> bool:
        return mine >= 0 and int(region[s]) != mine and not float(t_ms[s]) <= seen_before
    guess = view.max_tokens
    n = len(srv.batch)
    v_true = srv.v + ((now - srv.t_last) / srv.dep.tpot_ms(n) if n else 0.0)
    v = 0.0
    heap: list[tuple[float, int]] = []
    tokens: dict[int, float] = {}
    for vf, s in srv.batch:
        if hidden(s):
            continue
        if guess:  # its max_tokens less what it delivered, at no noise
            dec = (v_true - float(sim._join_v[s])) / float(noise[s])
            left = max(guess[s] - 1 - dec, 1.0)
            heap.append((left, s))
            tokens[s] = dec + left
        else:
            heap.append((vf - v_true, s))
            tokens[s] = int(st.output[s]) - 1
    heapq.heapify(heap)
    waiting = deque(w for w in srv.waiting if not hidden(w))
    admitted: set[int] = set()
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    pre_sid, pre_end = (srv.prefilling, srv.prefill_end) if srv.prefilling >= 0 else (-1, INF)
    if pre_sid >= 0 and hidden(pre_sid):
        pre_sid, pre_end = -1, INF
    arrivals = [a for a in arrivals if not hidden(a[1]) or a[1] == add]
    t, ai, na = now, 0, len(arrivals)
    share = join = own_share = 0.0
    busy = max(pre_end - now, 0.0) if pre_sid >= 0 else 0.0
    own_prefill = 0.0
    while True:
        while ai < na and arrivals[ai][0] <= t:
            waiting.append(arrivals[ai][1])
            ai += 1
        if pre_sid < 0 and waiting and len(heap) + 1 <= max_batch:
            s = waiting.popleft()
            ses = int(session[s])
            hit = 0
            if ses >= 0:
                held = int(shared[s]) if ses in admitted else srv.cached(ses)
                hit = min(held, int(shared[s]))
                admitted.add(ses)
            ms = dep.prefill_ms(int(sim.prompt[s]) - hit) * (1.0 if guess else float(noise[s]))
            pre_sid, pre_end = s, t + ms
            busy += ms
            if s == add:
                own_prefill = ms
        t_dec = t + (heap[0][0] - v) * tp[len(heap)] if heap else INF
        t_arr = arrivals[ai][0] if ai < na else INF
        t_pre = pre_end if pre_sid >= 0 else INF
        t_next = min(t_dec, t_arr, t_pre)
        if t_next == INF:
            break
        nb = len(heap)
        if nb:
            dt = t_next - t
            v += dt / tp[nb]
            share += dt / nb
            busy += dt
        t = t_next
        if t_pre <= t_next:
            s, pre_sid = pre_sid, -1
            first[s] = t
            left = (guess[s] if guess else int(sim._left[s])) - 1
            tokens[s] = left
            if left <= 0:
                done[s] = t
            else:
                if s == add:
                    join = share
                heapq.heappush(heap, (v + left * (1.0 if guess else float(noise[s])), s))
        elif t_dec <= t_next:
            while heap and heap[0][0] <= v + 1e-9:
                _, s = heapq.heappop(heap)
                done[s] = t
                if s == add:
                    own_share = share - join
    return Emulated(first, done, tokens, own_share, own_prefill, busy)


class CheapestFeasibleOracle:
    """The oracle (see the module doc). ``ttft_slack`` / ``tpot_slack``: the share of each
    objective the emulation may not use (for the streams that arrive later)."""

    def __init__(self, sim: TokenSim, name: str, ttft_slack: float = 0.0,
                 tpot_slack: float = 0.0, marginal: bool = False, move: bool = False,
                 own_edge: bool = False, max_tokens: bool = False,
                 nominal: bool = False, others_after_ms: float = math.inf,
                 slow_seen_ms: float = math.inf, admit: bool = False) -> None:
        self.name = name
        # the ablations: what the emulation may not see (``View``)
        self._own_edge, self._nominal = own_edge, nominal
        self._late = (others_after_ms, slow_seen_ms)
        self._admit = admit  # servers refuse what their true state cannot serve in time
        self._delay: dict[int, float] = {}
        self.refused = 0
        self._guess = (tuple(sim.s.classes[int(k)].max_tokens for k in sim.streams.klass)
                       if max_tokens else ())
        self._ttft_slack, self._tpot_slack = ttft_slack, tpot_slack
        self._marginal = marginal
        self.check_every_ms = MOVE_CHECK_MS if move else 0.0
        n = len(sim.servers)
        self._flight: list[list[tuple[float, int]]] = [[] for _ in range(n)]
        st = sim.streams
        self._ttft_goal = [sim.s.classes[int(k)].ttft_ms for k in st.klass]
        self._tpot_goal = [sim.s.classes[int(k)].tpot_ms for k in st.klass]
        self._usd_ms = [d.usd_per_hour / 3.6e6 for d in sim.deployments]
        self.infeasible = 0
        self.moves = 0
        self._moved: set[int] = set()

    # -- the outcome of one stream in an emulation ---------------------------------------
    def _ttft(self, sim: TokenSim, s: int, d: int, e: Emulated) -> float:
        if s not in e.first:  # already had its first token (or never served: a miss)
            return float(sim.out.ttft_ms[s]) if not math.isnan(sim.out.ttft_ms[s]) else INF
        return float(e.first[s] + sim.rtt[int(sim.streams.region[s]), d] / 2 - sim.streams.t_ms[s])

    def _view(self, edge: int) -> View:
        return View(edge if self._own_edge else -1, self._guess, self._nominal, *self._late)

    def _tpot(self, sim: TokenSim, s: int, e: Emulated) -> float:
        if s not in e.done:
            return INF
        tokens = e.tokens.get(s, 0.0)
        if tokens <= 0:
            return 0.0
        first = e.first.get(s, float(sim.out.first_ms[s]))
        return (e.done[s] - first) / tokens

    def _meets(self, sim: TokenSim, s: int, d: int, e: Emulated) -> bool:
        return (self._ttft(sim, s, d, e) <= self._ttft_goal[s]
                and self._tpot(sim, s, e) <= self._tpot_goal[s])

    def _others(self, sim: TokenSim, d: int, e: Emulated, skip: int) -> list[int]:
        """The streams on ``d`` (or travelling to it) whose outcome the emulation gives."""
        return [s for s in e.done if s != skip and sim.out.moved_to[s] < 0]

    # -- choosing ------------------------------------------------------------------------
    def _arrivals(self, d: int, now: float) -> list[tuple[float, int]]:
        fl = self._flight[d]
        if fl and fl[0][0] <= now:
            fl[:] = [x for x in fl if x[0] > now]
        return fl

    def _options(self, sim: TokenSim, sid: int, edge: int, now: float,
                 exclude: int = -1) -> int:
        best, best_cost = -1, INF
        fallback, fb_key = -1, (INF, INF)
        feasible: list[tuple[float, int, float]] = []
        ranked: list[tuple[tuple[float, float], int]] = []
        goal_ttft = self._ttft_goal[sid] * (1.0 - self._ttft_slack)
        goal_tpot = self._tpot_goal[sid] * (1.0 - self._tpot_slack)
        view = self._view(edge)
        for d in range(len(sim.servers)):
            if d == exclude:
                continue
            arrive = now + sim.rtt[edge, d] / 2
            base = self._arrivals(d, now)
            arrivals = sorted([*base, (arrive, sid)])
            e = emulate(sim, d, now, arrivals, add=sid, view=view)
            if exclude < 0:
                ttft = e.first[sid] + sim.rtt[edge, d] / 2 - float(sim.streams.t_ms[sid])
                tpot = self._tpot(sim, sid, e)
            else:  # a move: its TPOT spans both attempts, the re-prefill gap included
                ttft = 0.0
                shift = (sim.rtt[edge, d] - sim.rtt[edge, int(sim.out.deployment[sid])]) / 2
                tpot = ((e.done[sid] + shift - float(sim.out.first_ms[sid]))
                        / max(int(sim.streams.output[sid]) - 1, 1))
            usd = self._usd_ms[d]
            if self._marginal:
                cost = (e.busy_ms - emulate(sim, d, now, list(base), view=view).busy_ms) * usd
            else:
                cost = (e.prefill_ms + e.share_ms) * usd
            key = (max(ttft / self._ttft_goal[sid], tpot / self._tpot_goal[sid]), cost)
            ranked.append((key, d))
            if key < fb_key:
                fallback, fb_key = d, key
            if ttft > goal_ttft or tpot > goal_tpot or (cost >= best_cost and not self._admit):
                continue
            if not self._harmless(sim, d, now, e, sid, base, view):
                continue
            best, best_cost = d, min(cost, best_cost)
            feasible.append((cost, d, ttft))
        if self._admit and exclude < 0:
            return self._admitted(sim, sid, edge, now, sorted(feasible),
                                  [d for _, d in sorted(ranked)])
        if best < 0:
            self.infeasible += 1
            return fallback
        return best

    def _admitted(self, sim: TokenSim, sid: int, edge: int, now: float,
                  feasible: list[tuple[float, int, float]], fallbacks: list[int]) -> int:
        """``-admit``: the edge tries its view's feasible deployments cheapest first; each
        server refuses a stream its own state says it cannot serve in time (the emulation
        with every edge's streams there, its speed now, lengths as the view knows them: a
        server knows its streams' ``max_tokens``, not their lengths), and the refusal costs
        the edge a round trip to it. At most ``ADMIT_TRIES`` refusals, then the view's
        fallback (the best it predicts that did not refuse)."""
        server = View(max_tokens=self._guess)
        delay = 0.0
        goal_ttft = self._ttft_goal[sid] * (1.0 - self._ttft_slack)
        tries = 0
        refused: set[int] = set()
        for _, d, view_ttft in feasible:
            if view_ttft + delay > goal_ttft:
                continue
            if tries == ADMIT_TRIES:
                break
            tries += 1
            if self.admits(sim, sid, edge, d, now, delay, server):
                self._delay[sid] = delay
                return d
            delay += float(sim.rtt[edge, d])
            refused.add(d)
            self.refused += 1
        self.infeasible += 1
        self._delay[sid] = delay
        return next((d for d in fallbacks if d not in refused), fallbacks[0])

    def admits(self, sim: TokenSim, sid: int, edge: int, d: int, now: float, delay: float,
               server: View) -> bool:
        """Server ``d``'s admission check for ``sid`` sent ``delay`` ms after ``now``: its state
        as ``server`` knows it (every edge's streams there and on their way, its speed now)
        says the stream meets both objectives less the slack and no stream there misses."""
        rtt = float(sim.rtt[edge, d])
        base = self._arrivals(d, now)
        e = emulate(sim, d, now, sorted([*base, (now + delay + rtt / 2, sid)]), add=sid,
                    view=server)
        ttft = e.first[sid] + rtt / 2 - float(sim.streams.t_ms[sid])
        return (ttft <= self._ttft_goal[sid] * (1.0 - self._ttft_slack)
                and self._tpot(sim, sid, e) <= self._tpot_goal[sid] * (1.0 - self._tpot_slack)
                and self._harmless(sim, d, now, e, sid, base, server))

    def sent(self, sid: int, d: int, at: float) -> None:
        """``sid`` is on its way to ``d`` and arrives at ``at`` (ms)."""
        self._flight[d].append((at, sid))
        self._flight[d].sort()

    def route_delay_ms(self, sid: int) -> float:
        """How long ``sid``'s refusals held it before it left for its deployment."""
        return self._delay.pop(sid, 0.0)

    def _harmless(self, sim: TokenSim, d: int, now: float, e: Emulated, sid: int,
                  base: list[tuple[float, int]], view: View) -> bool:
        """No stream on ``d`` that meets both objectives without ``sid`` misses one with it."""
        hurt = [s for s in self._others(sim, d, e, sid) if not self._meets(sim, s, d, e)]
        if not hurt:
            return True
        without = emulate(sim, d, now, list(base), view=view)
        return not any(self._meets(sim, s, d, without) for s in hurt)

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        d = self._options(sim, sid, edge, now)
        self.sent(sid, d, now + self._delay.get(sid, 0.0) + sim.rtt[edge, d] / 2)
        return d

    # -- moving (``move``) ---------------------------------------------------------------
    def check(self, now: float, sim: TokenSim) -> list[tuple[int, int]]:
        """Streams decoding where the emulation now says they miss their TPOT objective (a
        slowdown caught them), each moved once to the cheapest feasible other deployment."""
        moves = []
        for d, srv in enumerate(sim.servers):
            if srv.dep is sim.deployments[d] or not srv.batch:
                continue  # only a slowed server's streams are caught by surprise
            e = emulate(sim, d, now, list(self._arrivals(d, now)))  # moves: every view
            for _, s in srv.batch:
                if s in self._moved or self._tpot(sim, s, e) <= self._tpot_goal[s]:
                    continue
                edge = int(sim.streams.region[s])
                delivered = 1 + int(sim.decoded(s, d, now) + 1e-9)
                saved = (int(sim.prompt[s]), int(sim._left[s]))
                sim.prompt[s] = int(sim.streams.prompt[s]) + delivered  # as move() will set
                sim._left[s] = int(sim.streams.output[s]) - delivered
                target = self._options(sim, s, edge, now, exclude=d)
                sim.prompt[s], sim._left[s] = saved
                self._moved.add(s)
                if target >= 0 and target != d:
                    moves.append((s, target))
                    self._flight[target].append((now + sim.rtt[edge, target] / 2, s))
                    self._flight[target].sort()
                    self.moves += 1
        return moves

    def resumed(self, sid: int, now: float, sim: TokenSim) -> None:
        pass

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass
