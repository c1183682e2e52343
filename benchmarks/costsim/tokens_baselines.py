"""The baselines of the token simulation: the LLM routers' rules (``tokens_policies.py``
builds them by name).

The baselines see the **true** server state the moment they choose (every region's
streams, queues and caches), which is more than a real router scraping metrics has:
``round-robin`` (per edge), ``least-loaded`` (fewest streams waiting or running),
``prefix-affinity`` (llm-d-like: the default scheduler profile's prefix-cache scorer,
weight 3, plus a queue scorer, weight 2, as Red Hat OpenShift AI 3.4 documents llm-d's
default; the prefix score is the fraction of the prompt the server holds, the queue score
``(max − q) / (max − min)`` over the deployments' streams waiting or running; cost and
distance ignored; ties random) and ``lowest-latency`` (the fastest predicted TTFT: RTT +
queued prefill work + its own uncached prefill, from the true queue and cache).
"""

from __future__ import annotations

import math
import random

from benchmarks.costsim.tokensim import TokenSim

PREFIX_WEIGHT, QUEUE_WEIGHT = 3.0, 2.0


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        k = self._next.get(edge, 0)
        self._next[edge] = k + 1
        return k % len(sim.servers)

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass


class LeastLoaded:
    name = "least-loaded"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        n = len(sim.servers)
        self._turn += 1
        order = [(self._turn + k) % n for k in range(n)]  # ties rotate
        return min(order, key=lambda d: sim.servers[d].inflight)

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass


class LowestLatency:
    name = "lowest-latency"

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        st = sim.streams
        session, p = int(st.session[sid]), int(st.prompt[sid])

        def ttft(d: int) -> float:
            srv = sim.servers[d]
            hit = min(srv.cached(session), int(st.shared[sid]))
            busy = max(srv.prefill_end - now, 0.0) if srv.prefilling >= 0 else 0.0
            return (sim.rtt[edge, d] + busy + srv.pending_prefill_ms
                    + srv.dep.prefill_ms(p - hit))

        return min(range(len(sim.servers)), key=ttft)

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass


class PrefixAffinity:
    name = "prefix-affinity"

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        st = sim.streams
        session, p = int(st.session[sid]), int(st.prompt[sid])
        shared = int(st.shared[sid])
        q = [s.inflight for s in sim.servers]
        lo, hi = min(q), max(q)
        best, picks = -math.inf, []
        for d, srv in enumerate(sim.servers):
            prefix = min(srv.cached(session), shared) / p if session >= 0 else 0.0
            queue = (hi - q[d]) / (hi - lo) if hi > lo else 1.0
            score = PREFIX_WEIGHT * prefix + QUEUE_WEIGHT * queue
            if score > best + 1e-12:
                best, picks = score, [d]
            elif abs(score - best) <= 1e-12:
                picks.append(d)
        return self._rng.choice(picks)

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass
