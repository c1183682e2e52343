"""A discrete-event simulation of LLM streams on emulated model servers (no GPUs here).

Each deployment is one model server (``tokens_workload.Deployment``) that works like the
demo LLM (``services/backends/demo_model.py``), with emulated speeds:

- **admission**: a stream that reaches the server (``rtt / 2`` after the edge routed it)
  waits in one FIFO queue until the server prefills nothing and its batch has room
  (``max_batch`` streams decoding plus the one prefilling);
- **prefill**: one stream at a time, ``prefill_base_ms + uncached prompt tokens ×
  prefill_ms_per_token`` (× the variant's factor × the stream's noise); it runs beside the
  batch's decode (as chunked prefill would) and does not slow it;
- **prefix cache**: an LRU of ``cache_tokens`` tokens per server. A session stream's prompt
  starts with its session's prefix; the tokens the server still holds for that session are
  not prefilled. Streams without a session occupy the cache and never hit;
- **decode**: the first token comes out of prefill; the other ``M − 1`` tokens decode in a
  batch of ``n`` streams at ``decode_ms × (1 + batch_slowdown × (n − 1))`` per token each
  (processor sharing: the pace changes whenever a stream joins or leaves).

**Moves** (a policy with a ``check_every_ms``): every that many ms the policy looks at its
streams decoding and may move some (``move``): the old server drops the stream at once (its
decode billed up to then), and the stream arrives ``rtt / 2`` later at the new one as a
request for its prompt plus the tokens it delivered (the edge's resumption,
``services.edge.tokens.resume_request``), which prefills them (less any cached session
prefix; billed like any prefill) and decodes the rest. The cancel is modelled as instant:
tokens the old server would decode while the cancel travels are neither billed nor lost. A
moved stream's TTFT is its first attempt's; its TPOT spans both attempts, the re-prefill gap
included.

A scenario's ``[[slowdowns]]`` make some servers slower from a point in time on (their
prefill and decode × a factor; emulated throttling), unannounced to every policy.

**Fleet reports** (emulated telemetry): a policy with a ``report_every_ms`` is handed, every
that many ms of simulated time, each server's ``ServerReport`` (what an agent would read of
it: the uncached prompt tokens and streams still waiting for a first token, the streams
decoding); the policy decides when it may use them (a push delay later).

A stream's **TTFT** is ``rtt / 2 + queue + prefill + rtt / 2``; its **TPOT** is its decode
time over ``M − 1`` tokens. **Cost** is GPU time billed per token: the stream's own prefill
time, plus its share of the server's batch's decode time (``∫ dt / n`` while it decodes,
every edge's streams in ``n``), times the deployment's $/GPU-second. Idle GPU time is billed
to no one: this compares routing, not provisioning. The Python edge's ``x-cost-usd``
(``services/edge/token_stats.py``) divides a decode by its own streams there + 1 instead
(it sees no other edge's): the two agree where one edge uses a server
(``benchmarks.tokens_price`` sets them side by side per pool).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from benchmarks.costsim.tokens_workload import Deployment, Streams, TokenScenario

ARRIVE, PREFILLED, DECODED, SLOWED, REPORT, CHECK = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class ServerReport:
    """One server's queue as an agent would sample it (emulated telemetry)."""

    waiting_tokens: int  # uncached prompt tokens of streams without a first token yet
    waiting_streams: int  # streams queued or prefilling
    running_streams: int  # streams decoding


class Server:
    """One emulated model server's state."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.waiting: deque[int] = deque()
        self.prefilling = -1
        self.prefill_end = 0.0
        self.pending_prefill_ms = 0.0  # estimated prefill work queued (for lowest-latency)
        self.batch: list[tuple[float, int]] = []  # (virtual finish, stream)
        self.v = 0.0  # tokens each decoding stream has produced since t = 0 (virtual)
        self.share = 0.0  # ∫ dt / n: one stream's share of decode time (ms)
        self.t_last = 0.0
        self.version = 0
        self.cache: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.cache_used = 0

    @property
    def inflight(self) -> int:
        return len(self.waiting) + (self.prefilling >= 0) + len(self.batch)

    def report(self, streams: Streams, prompt: np.ndarray, prefill_hit: int) -> ServerReport:
        """What an agent reads of this server now: its queue's prompt tokens (``prompt``: each
        request's, a resumed one's included) less what its cache holds of each
        (``prefill_hit``: what the stream prefilling now saved)."""
        tokens = sum(int(prompt[w]) - min(self.cached(int(streams.session[w])),
                                          int(streams.shared[w]))
                     for w in self.waiting)
        if self.prefilling >= 0:
            tokens += int(prompt[self.prefilling]) - prefill_hit
        return ServerReport(tokens, len(self.waiting) + (self.prefilling >= 0),
                            len(self.batch))

    def cached(self, session: int) -> int:
        """Tokens of ``session``'s prefix this server holds (no LRU touch)."""
        return self.cache.get((0, session), 0) if session >= 0 else 0

    def advance(self, now: float) -> None:
        n = len(self.batch)
        if n:
            dt = now - self.t_last
            self.v += dt / self.dep.tpot_ms(n)
            self.share += dt / n
        self.t_last = now

    def _insert(self, key: tuple[int, int], tokens: int) -> None:
        old = self.cache.pop(key, 0)
        self.cache_used -= old
        self.cache[key] = max(old, tokens) if key[0] == 0 else tokens
        self.cache_used += self.cache[key]
        cap = self.dep.accelerator.cache_tokens
        while self.cache_used > cap and len(self.cache) > 1:
            _, gone = self.cache.popitem(last=False)
            self.cache_used -= gone

    def admit(self, sid: int, streams: Streams, prompt: int) -> int:
        """Start ``sid``'s prefill of ``prompt`` tokens: returns the tokens the cache saved."""
        session = int(streams.session[sid])
        hit = min(self.cached(session), int(streams.shared[sid])) if session >= 0 else 0
        if session >= 0:
            self._insert((0, session), int(streams.shared[sid]))
            rest = prompt - int(streams.shared[sid])
            if rest:
                self._insert((1, sid), rest)
        else:
            self._insert((1, sid), prompt)
        return hit


class Policy(Protocol):
    name: str

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int: ...

    def first_token(self, sid: int, sim: TokenSim) -> None: ...

    def finished(self, sid: int, sim: TokenSim) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What every stream measured (NaN before it was served)."""

    deployment: np.ndarray
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    cost_usd: np.ndarray
    cache_hit: np.ndarray
    load_at_start: np.ndarray  # streams the choosing edge's policy counted there (Switchyard)
    first_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moved_to: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1
    moved_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # when it moved
    prefill_usd: np.ndarray = field(default_factory=lambda: np.zeros(0))  # first prefill's $


class TokenSim:
    """Routes every stream of ``streams`` with ``policy`` and runs the servers."""

    def __init__(self, scenario: TokenScenario, streams: Streams) -> None:
        self.s = scenario
        self.streams = streams
        self.regions = sorted(scenario.regions)
        self.servers = [Server(d) for d in scenario.deployments]
        self.rtt = np.array([[scenario.rtt(r, d.region) for d in scenario.deployments]
                             for r in self.regions])
        n = len(streams)
        nan = np.full(n, math.nan)
        self.out = Outcome(np.full(n, -1), nan.copy(), nan.copy(), nan.copy(),
                           np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                           np.zeros(n), np.full(n, -1), nan.copy(), nan.copy())
        # each stream's request now: its prompt (plus delivered tokens once moved), the
        # output tokens still to come when it arrives, and where it is
        self.prompt = streams.prompt.astype(np.int64).copy()
        self._left = streams.output.astype(np.int64).copy()
        self.at = np.full(n, -1)
        self._join_v = np.zeros(n)
        self._join_share = np.zeros(n)
        self._events: list[tuple[float, int, int, int, int]] = []
        self._work = 0  # events in the heap that are not periodic (REPORT, CHECK)
        self._seq = 0

    @property
    def deployments(self) -> Sequence[Deployment]:
        return self.s.deployments

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, a, b))
        self._work += kind not in (REPORT, CHECK)

    def run(self, policy: Policy) -> Outcome:
        st = self.streams
        i, n = 0, len(st)
        for k, ev in enumerate(self.s.slowdowns):
            self._push(ev.at_s * 1000.0, SLOWED, k, 0)
        every = float(getattr(policy, "report_every_ms", 0.0))
        if every > 0:
            self._push(every, REPORT, 0, 0)
        check = float(getattr(policy, "check_every_ms", 0.0))
        if check > 0:
            self._push(check, CHECK, 0, 0)
        while i < n or self._events:
            if i < n and (not self._events or st.t_ms[i] <= self._events[0][0]):
                now = float(st.t_ms[i])
                edge = int(st.region[i])
                d = policy.choose(i, edge, now, self)
                self.out.deployment[i] = self.at[i] = d
                held = getattr(policy, "route_delay_ms", None)  # refusals before it left
                self._push(now + (held(i) if held else 0.0) + self.rtt[edge, d] / 2, ARRIVE,
                           i, d)
                i += 1
                continue
            now, _, kind, a, b = heapq.heappop(self._events)
            self._work -= kind not in (REPORT, CHECK)
            if kind == ARRIVE:
                srv = self.servers[b]
                srv.waiting.append(a)
                srv.pending_prefill_ms += srv.dep.prefill_ms(int(self.prompt[a]))
                self._try_prefill(srv, b, now)
            elif kind == PREFILLED:
                self._prefilled(a, b, now, policy)
            elif kind == SLOWED:
                self._slow(self.s.slowdowns[a].prefix, self.s.slowdowns[a].factor, now)
            elif kind == REPORT:
                self._report(policy, now, every, i < n or self._work > 0)
            elif kind == CHECK:
                for sid, d in policy.check(now, self):  # type: ignore[attr-defined]
                    self.move(sid, d, now)
                if i < n or self._work > 0:  # periodic events do not keep each other alive
                    self._push(now + check, CHECK, 0, 0)
            else:
                srv = self.servers[a]
                if b == srv.version:
                    self._decoded(srv, a, now, policy)
        return self.out

    def _try_prefill(self, srv: Server, d: int, now: float) -> None:
        if srv.prefilling >= 0 or not srv.waiting:
            return
        if len(srv.batch) + 1 > srv.dep.accelerator.max_batch:
            return
        sid = srv.waiting.popleft()
        st = self.streams
        prompt = int(self.prompt[sid])
        srv.pending_prefill_ms -= srv.dep.prefill_ms(prompt)
        hit = srv.admit(sid, st, prompt)
        self.out.cache_hit[sid] = hit
        ms = srv.dep.prefill_ms(prompt - hit) * float(st.noise[sid])
        srv.prefilling, srv.prefill_end = sid, now + ms
        billed = ms * srv.dep.usd_per_hour / 3.6e6
        if self.out.moved_to[sid] < 0:
            self.out.prefill_usd[sid] = billed
        self.out.cost_usd[sid] = billed + (0.0 if self.out.moved_to[sid] < 0
                                           else self.out.cost_usd[sid])
        self._push(now + ms, PREFILLED, sid, d)

    def _prefilled(self, sid: int, d: int, now: float, policy: Policy) -> None:
        srv, st = self.servers[d], self.streams
        srv.prefilling = -1
        edge = int(st.region[sid])
        if self.out.moved_to[sid] < 0:
            self.out.first_ms[sid] = now
            self.out.ttft_ms[sid] = now + self.rtt[edge, d] / 2 - st.t_ms[sid]
            policy.first_token(sid, self)
        else:  # a moved stream's first token on its new server is one more decoded token
            policy.resumed(sid, now, self)  # type: ignore[attr-defined]
        left = int(self._left[sid]) - 1
        if left <= 0:
            if self.out.moved_to[sid] >= 0:
                self.out.tpot_ms[sid] = self._tpot(sid, now)
            policy.finished(sid, self)
        else:
            srv.advance(now)
            self._join_v[sid] = srv.v
            self._join_share[sid] = srv.share
            heapq.heappush(srv.batch, (srv.v + left * float(st.noise[sid]), sid))
            self._reschedule(srv, d, now)
        self._try_prefill(srv, d, now)

    def _decoded(self, srv: Server, d: int, now: float, policy: Policy) -> None:
        srv.advance(now)
        usd_ms = srv.dep.usd_per_hour / 3.6e6
        while srv.batch and srv.batch[0][0] <= srv.v + 1e-9:
            _, sid = heapq.heappop(srv.batch)
            self.out.tpot_ms[sid] = self._tpot(sid, now)
            self.out.cost_usd[sid] += (srv.share - self._join_share[sid]) * usd_ms
            policy.finished(sid, self)
        self._reschedule(srv, d, now)
        self._try_prefill(srv, d, now)

    def _tpot(self, sid: int, now: float) -> float:
        """``sid``'s TPOT, its last token decoded at ``now``: as its edge sees the tokens
        arrive (a moved stream's first and last tokens crossed different RTTs)."""
        edge, first = int(self.streams.region[sid]), int(self.out.deployment[sid])
        shift = (self.rtt[edge, int(self.at[sid])] - self.rtt[edge, first]) / 2
        return (now + shift - self.out.first_ms[sid]) / (int(self.streams.output[sid]) - 1)

    def move(self, sid: int, d: int, now: float) -> None:
        """``sid`` (decoding) leaves its server at ``now`` and is sent to ``d`` with its prompt
        plus the tokens it delivered (see the module docstring)."""
        old = int(self.at[sid])
        srv, st = self.servers[old], self.streams
        delivered = 1 + int(self.decoded(sid, old, now) + 1e-9)
        srv.advance(now)
        srv.batch = [e for e in srv.batch if e[1] != sid]
        heapq.heapify(srv.batch)
        usd_ms = srv.dep.usd_per_hour / 3.6e6
        self.out.cost_usd[sid] += (srv.share - self._join_share[sid]) * usd_ms
        self._reschedule(srv, old, now)
        self._try_prefill(srv, old, now)
        self.prompt[sid] = int(st.prompt[sid]) + delivered
        self._left[sid] = int(st.output[sid]) - delivered
        self.at[sid] = self.out.moved_to[sid] = d
        self.out.moved_ms[sid] = now
        edge = int(st.region[sid])
        self._push(now + self.rtt[edge, d] / 2, ARRIVE, sid, d)

    def decoded(self, sid: int, d: int, now: float) -> float:
        """Tokens ``sid`` (decoding on ``d``) has delivered since its first token, by ``now``
        (what an edge counts as they arrive; the RTT shifts both ends alike). Reads the
        server's state without advancing it, so looking changes no later event."""
        srv = self.servers[d]
        n = len(srv.batch)
        v = srv.v + ((now - srv.t_last) / srv.dep.tpot_ms(n) if n else 0.0)
        return (v - self._join_v[sid]) / float(self.streams.noise[sid])

    def pace(self, sid: int, d: int) -> float:
        """The time between ``sid``'s tokens now (decoding on ``d``): what an edge measures
        over a stream's last few tokens (here without their lag of a few tokens)."""
        srv = self.servers[d]
        return srv.dep.tpot_ms(len(srv.batch)) * float(self.streams.noise[sid])

    def _report(self, policy: Policy, now: float, every: float, more: bool) -> None:
        """Hand ``policy`` every server's report at ``now``; the next one ``every`` ms later
        while streams remain."""
        out = self.out.cache_hit
        reports = [srv.report(self.streams, self.prompt,
                              int(out[srv.prefilling]) if srv.prefilling >= 0 else 0)
                   for srv in self.servers]
        policy.reported(now, reports)  # type: ignore[attr-defined]
        if more:
            self._push(now + every, REPORT, 0, 0)

    def _slow(self, prefix: str, factor: float, now: float) -> None:
        """A slowdown event: the matching servers run ``factor`` × slower from ``now`` (a
        prefill already running keeps its end; queued work is re-estimated)."""
        for d, srv in enumerate(self.servers):
            if not srv.dep.id.startswith(prefix):
                continue
            srv.advance(now)
            srv.dep = srv.dep.slowed(factor)
            srv.pending_prefill_ms = sum(srv.dep.prefill_ms(int(self.prompt[w]))
                                         for w in srv.waiting)
            self._reschedule(srv, d, now)

    def _reschedule(self, srv: Server, d: int, now: float) -> None:
        srv.version += 1
        if srv.batch:
            left = max(srv.batch[0][0] - srv.v, 0.0)
            self._push(now + left * srv.dep.tpot_ms(len(srv.batch)), DECODED, d, srv.version)
