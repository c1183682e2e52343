"""How each policy picks a deployment for one LLM stream in the token simulation.

- ``switchyard``: one edge per region, each with the Python edge's own ``StreamStats``
  (``services/edge/token_stats.py``: its streams in flight, the prefill rate and TPOT line
  it learned from its own streams, session → prefix holder) feeding the same pure
  ``placement.streams.choose_stream`` the edge runs, and, every ``MOVE_CHECK_MS``, each of
  its decoding streams' tokens counted into a ``placement.stream_move.MoveWatch`` that may
  move it, as ``services/edge/generation.py`` does at each token (same variant: the
  simulated streams do not allow a change; ``switchyard-no-move`` without). It sees nothing
  else: not the other edges' streams, not the servers' queues or caches. With ``fleet``
  (``switchyard-fleet``) it also gets what the live path would carry from the agents: every
  ``REPORT_EVERY_MS`` each server's prefill queue (``tokensim.ServerReport``: uncached
  prompt tokens and streams still waiting for a first token), usable ``PUSH_DELAY_MS``
  after it was sampled (agent → placement → route rows → edge), never the instant state;
  each edge subtracts its own pending tokens as of the sample
  (``placement.streams.FleetQueue``).
  ``switchyard-fleet-instant`` is the same with a report every 50 ms and no push delay: an
  upper bound of what a fresher view could give, not something the live path can carry.
  With ``handoffs`` (``switchyard-handoff*``, measured, not kept) each ``MoveWatch`` may also
  hand a stream on pace to a cheaper deployment (``MoveWatch.handoff``).
- the baselines (``tokens_baselines.py``) see the true state of every server when they
  choose: ``round-robin``, ``least-loaded``, ``prefix-affinity`` (llm-d-like) and
  ``lowest-latency``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence

from benchmarks.costsim import tokens_moves
from benchmarks.costsim.tokens_workload import Deployment
from benchmarks.costsim.tokensim import ServerReport, TokenSim
from placement.model import Candidate
from placement.stream_guard import PendingLog, TtftGuard, fleet_queues, tpot_factors
from placement.stream_move import (
    HANDOFF_SAVING,
    HANDOFF_TTFT,
    MoveWatch,
)
from placement.streams import (
    FALLBACK_BAND,
    LOAD_FACTOR,
    TTFT_HEADROOM,
    FleetQueue,
    StreamAsk,
    StreamChoice,
    choose_stream,
)
from services.edge.token_stats import StreamStats

MIN_LIVE_TOKENS = 4  # a decoding stream's own TPOT counts once it delivered this many
UNMEASURED_P95_MS = 200.0  # a table p95 before any stream was measured (plus the RTT)
# The fleet view's staleness: the agent reads Triton every interval (its default
# ``--interval 1.0``), and a report reaches the edges after placement's coalescing
# (``placement.coalesce_ms`` 50), the rows' rebuild and the push: 250 ms assumed here.
REPORT_EVERY_MS = 1000.0
PUSH_DELAY_MS = 250.0
MOVE_CHECK_MS = 50.0  # how often a moving policy looks at its decoding streams (per token live)


@dataclasses.dataclass(frozen=True, slots=True)
class Priced:
    """What ``choose_stream``'s prediction charged one stream where it sent it: its prefill
    ($) and each output token's share of the decode ($: by default the TPOT predicted at the
    edge's load there over that load + 1), and that load (this edge's streams already
    there)."""

    prefill_usd: float
    decode_usd_per_token: float
    load: int


class Switchyard:
    """The edge's token choice, one ``StreamStats`` per edge region (see the module doc).
    ``pending`` feeds ``choose_stream`` this edge's streams still waiting for a first token;
    ``ttft_headroom`` and ``load_factor`` are ``choose_stream``'s own parameters; ``guard``:
    each edge also learns TTFT margins (``placement.stream_guard.TtftGuard``, fed at each
    stream's first token) and passes them as ``ttft_margins`` (not what the edge runs yet)."""

    def __init__(self, sim: TokenSim, name: str = "switchyard", pending: bool = True,
                 ttft_headroom: float = TTFT_HEADROOM, load_factor: float = LOAD_FACTOR,
                 guard: bool = False, live_tpot: bool = False, fleet: bool = False,
                 fleet_load: bool = False, fleet_work: bool = False,
                 fleet_count: bool = False,
                 report_every_ms: float = REPORT_EVERY_MS,
                 push_delay_ms: float = PUSH_DELAY_MS, move: bool = True,
                 move_slack: float = 0.0, fallback_band: float = FALLBACK_BAND,
                 probes: int | None = None, share_batch: bool = True,
                 handoffs: int = 0, handoff_saving: float = HANDOFF_SAVING,
                 handoff_ttft: float = HANDOFF_TTFT, handoff_owed: bool = False,
                 shared_by: str = "") -> None:
        self.name = name
        # an oracle (simulator only): each decode priced as shared with the server's true
        # streams, all edges' ("inflight": waiting, prefilling or decoding; "decoding")
        self._shared_by = shared_by
        # a handoff priced for all the tokens owed, not MoveWatch.handoff_tokens (measured)
        self.handoff_owed = handoff_owed
        self._handoff_kw = {"handoff_saving": handoff_saving, "handoff_ttft": handoff_ttft}
        self._handoffs = handoffs  # MoveWatch(max_handoffs=...): cost handoffs per stream
        self._share_batch = share_batch
        self._probes = probes
        self._fallback_band = fallback_band
        # move: each edge watches its decoding streams' pace (``placement.stream_move``) and
        # moves one predicted to miss its TPOT, as ``services/edge/generation.py`` does
        self.check_every_ms = MOVE_CHECK_MS if move else 0.0
        self._move_slack = move_slack
        self.watches: list[dict[int, MoveWatch]] = [{} for _ in sim.regions]
        self._moved: dict[int, tuple[float, int, float]] = {}  # sid → (at ms, count, B first)
        self.report_every_ms = report_every_ms if fleet else 0.0
        self._fleet_load, self._fleet_work = fleet_load, fleet_work
        # fleet_count: the report is the server's count of streams waiting (what Triton's
        # nv_inference_pending_request_count gives), priced at this edge's mean uncached prompt
        self._fleet_count = fleet_count
        self._prompted = [[0, 0] for _ in sim.regions]  # per edge: uncached tokens, streams
        self._push_delay = push_delay_ms
        # reports not yet superseded: (sampled at ms, per deployment: report, per edge: its
        # streams there then, for fleet_load)
        self._reports: deque[tuple[float, dict[str, ServerReport], list[dict[str, int]]]] = \
            deque()
        self.logs = [PendingLog() for _ in sim.regions]  # each edge's own pending over time
        self._use_pending, self._headroom, self._load_factor = (pending, ttft_headroom,
                                                                load_factor)
        self.stats = [StreamStats() for _ in sim.regions]
        self.guards = [TtftGuard() for _ in sim.regions] if guard else None
        self._live_tpot = live_tpot
        # per edge: stream → (deployment index, predicted TPOT) while it decodes
        self.decoding: list[dict[int, tuple[int, float]]] = [{} for _ in sim.regions]
        self._tpot_pred: dict[int, float] = {}
        self.cands = [[_candidate(d, float(sim.rtt[e, i]))
                       for i, d in enumerate(sim.deployments)] for e in range(len(sim.regions))]
        self.index = {d.id: i for i, d in enumerate(sim.deployments)}
        # stream → (deployment, load learned against, hit, prompt tokens learned against)
        self._open: dict[int, tuple[int, int, int, int]] = {}
        # per edge: uncached prompt tokens of its streams still waiting for a first token
        self.pending: list[dict[str, int]] = [{} for _ in sim.regions]
        self.infeasible = 0  # streams for which nothing was predicted to meet both
        self._ask: dict[int, StreamAsk] = {}
        # per stream chosen on a measured deployment: what its choice priced it at
        self.priced: dict[int, Priced] = {}
        self.moves = 0
        self.handoffs = 0  # of ``moves``, those made for cost (``MoveWatch.handoff``)

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        st, stats = sim.streams, self.stats[edge]
        key = _session_key(sid, int(st.session[sid]))
        holder, seen = stats.holder(key)
        p = int(st.prompt[sid])
        cls = sim.s.classes[int(st.klass[sid])]
        ask = StreamAsk(prompt_tokens=p, max_tokens=cls.max_tokens, ttft_ms=cls.ttft_ms,
                        tpot_ms=cls.tpot_ms, session_key=key, holder=holder,
                        cached_tokens=min(seen, p))
        cands = self.cands[edge]
        pending = self.pending[edge]
        fleet = self._fleet(edge, now)
        estimates = stats.estimates(cands)
        choice = choose_stream(cands, estimates, stats.inflight, ask,
                               load_factor=self._load_factor,
                               pending=pending if self._use_pending else None,
                               ttft_headroom=self._headroom,
                               ttft_margins=(self.guards[edge].margins(now / 1000.0)
                                             if self.guards else None),
                               tpot_factors=(self._running(edge, now, sim)
                                             if self._live_tpot else None),
                               fleet=fleet, fleet_load=self._fleet_load,
                               fallback_band=self._fallback_band,
                               unmeasured_probes=self._probes,
                               share_batch=self._share_batch,
                               shared_by=self._true_batches(sim))
        choice = self.admitted(sid, edge, now, sim, choice, ask)
        if not choice.slo_met:
            self.infeasible += 1
        dep = choice.candidate.deployment_id
        load = stats.started(dep)
        hit = choice.chosen.cache_hit_tokens
        work = p - hit
        if self._fleet_work:  # the prefill rate is learned over the work predicted ahead
            work += pending.get(dep, 0) + choice.chosen.others_tokens
        pending[dep] = pending.get(dep, 0) + p - hit
        self._prompted[edge][0] += p - hit
        self._prompted[edge][1] += 1
        if self.report_every_ms:
            self.logs[edge].record(now / 1000.0, pending)
        sim.out.load_at_start[sid] = load
        q = fleet.get(dep) if fleet is not None and self._fleet_load else None
        self._open[sid] = (self.index[dep], load + (q.others_streams if q else 0), hit, work)
        if choice.chosen.measured:
            self._tpot_pred[sid] = choice.chosen.tpot_ms
            est = estimates[dep]
            prefill_usd = est.usd_per_second * (p - hit) * est.prefill_ms_per_token / 1000.0
            self.priced[sid] = Priced(prefill_usd, (choice.chosen.cost_usd - prefill_usd)
                                      / ask.max_tokens, load)
        self._ask[sid] = ask
        if self.guards is not None and choice.chosen.measured:
            self.guards[edge].sent(sid, dep, choice.chosen.ttft_ms, now / 1000.0)
        return self.index[dep]

    def admitted(self, sid: int, edge: int, now: float, sim: TokenSim, choice: StreamChoice,
                 ask: StreamAsk) -> StreamChoice:
        """The choice the servers let through (``tokens_admit.SwitchyardAdmit``); here every
        server admits every stream."""
        return choice

    def held_ms(self, sid: int) -> float:
        """How long refusals held ``sid`` before its attempt began (not the server's time)."""
        return 0.0

    def _true_batches(self, sim: TokenSim) -> dict[str, int] | None:
        """Per deployment, the streams its server holds now (the ``shared_by`` oracle)."""
        if not self._shared_by:
            return None
        return {d.id: (srv.inflight if self._shared_by == "inflight" else len(srv.batch))
                for d, srv in zip(sim.deployments, sim.servers, strict=True)}

    def first_token(self, sid: int, sim: TokenSim) -> None:
        d, _, hit, _ = self._open[sid]
        edge = int(sim.streams.region[sid])
        pending = self.pending[edge]
        dep = sim.deployments[d].id
        pending[dep] -= int(sim.streams.prompt[sid]) - hit
        if self.report_every_ms:
            self.logs[edge].record(float(sim.out.first_ms[sid]) / 1000.0, pending)
        predicted_tpot = self._tpot_pred.pop(sid, None)
        if predicted_tpot and int(sim.streams.output[sid]) > 1:
            self.decoding[edge][sid] = (d, predicted_tpot)
        ask = self._ask[sid]
        if self.check_every_ms and ask.tpot_ms is not None and int(sim.streams.output[sid]) > 1:
            watch = MoveWatch(ask.tpot_ms, ask.max_tokens, slack=self._move_slack,
                              max_handoffs=self._handoffs, ttft_ms=ask.ttft_ms,
                              handoff_saving=self._handoff_kw["handoff_saving"],
                              handoff_ttft=self._handoff_kw["handoff_ttft"])
            watch.tokens(float(sim.out.first_ms[sid]) / 1000.0, 1)
            self.watches[edge][sid] = watch
        if self.guards is not None:  # the first token reaches the edge rtt / 2 later
            at_edge = float(sim.streams.t_ms[sid]) + float(sim.out.ttft_ms[sid])
            self.guards[edge].first_token(sid, at_edge / 1000.0)

    def reported(self, now: float, reports: Sequence[ServerReport]) -> None:
        """The agents' reports sampled at ``now``, with each edge's own pending then."""
        by_id = dict(zip(self.index, reports, strict=True))
        self._reports.append((now, by_id, [dict(s.inflight) for s in self.stats]))

    def _fleet(self, edge: int, now: float) -> dict[str, FleetQueue] | None:
        """The newest report that has reached the edges by ``now`` (none yet: None)."""
        q, delay = self._reports, self._push_delay
        while len(q) > 1 and q[1][0] + delay <= now:
            q.popleft()
        if not q or q[0][0] + delay > now:
            return None
        sampled, reports, own = q[0]
        age_s = (now - sampled) / 1000.0  # what a route row would carry with the queue
        tokens, n = self._prompted[edge]
        mean = tokens / n if n else 0.0
        queues = fleet_queues({d: (round(r.waiting_streams * mean) if self._fleet_count
                                   else r.waiting_tokens, age_s)
                               for d, r in reports.items()}, self.logs[edge], now / 1000.0)
        if not self._fleet_load:
            return queues
        streams = own[edge]
        return {d: dataclasses.replace(queues[d], streams=r.waiting_streams + r.running_streams,
                                       own_streams=streams.get(d, 0))
                for d, r in reports.items()}

    def check(self, now: float, sim: TokenSim) -> list[tuple[int, int]]:
        """Each edge's decoding streams, their tokens counted as they arrive: the moves
        ``MoveWatch`` names (same variant: the sim's streams do not allow a change)."""
        moves = []
        for edge, watches in enumerate(self.watches):
            for sid, watch in list(watches.items()):
                if sid in self._moved and self._moved[sid][2] < 0:
                    continue  # in flight to its new deployment
                d = int(sim.at[sid])
                base = self._moved[sid][1] if sid in self._moved else 0
                watch.tokens(now / 1000.0, base + 1 + int(sim.decoded(sid, d, now) + 1e-9))
                target = tokens_moves.decide(self, edge, sid, d, watch, now, sim)
                if target >= 0:
                    moves.append((sid, target))
        return moves

    def resumed(self, sid: int, now: float, sim: TokenSim) -> None:
        """A moved stream's first token on its new deployment (server time ``now``)."""
        d, _, _, work = self._open[sid]
        edge = int(sim.streams.region[sid])
        dep = sim.deployments[d].id
        self.pending[edge][dep] -= work
        at, count, _ = self._moved[sid]
        self._moved[sid] = (at, count, now)
        predicted = self._tpot_pred.pop(sid, None)
        if predicted:
            self.decoding[edge][sid] = (d, predicted)
        self.watches[edge][sid].tokens(now / 1000.0, count + 1)

    def _running(self, edge: int, now: float, sim: TokenSim) -> dict[str, float]:
        """``tpot_factors`` from this edge's streams decoding now: the time between each
        one's latest tokens, as the edge sees them arrive, against the TPOT predicted when it
        was chosen (once it delivered ``MIN_LIVE_TOKENS``; with moves, each stream's
        ``MoveWatch`` pace, as the edge measures it)."""
        if self.check_every_ms:
            watches = self.watches[edge]
            paced = [(sim.deployments[d].id, predicted, watches[sid].pace_ms())
                     for sid, (d, predicted) in self.decoding[edge].items() if sid in watches]
            return tpot_factors([(d, p, pace) for d, p, pace in paced if pace is not None])
        seen = [(sim.deployments[d].id, predicted, sim.pace(sid, d))
                for sid, (d, predicted) in self.decoding[edge].items()
                if sim.decoded(sid, d, now) >= MIN_LIVE_TOKENS]
        return tpot_factors(seen)

    def finished(self, sid: int, sim: TokenSim) -> None:
        """What the edge measures at the stream's end, taught to its ``StreamStats``."""
        d, load, _, work = self._open.pop(sid)
        st, out = sim.streams, sim.out
        edge = int(st.region[sid])
        stats, dep = self.stats[edge], sim.deployments[d].id
        stats.ended(dep)
        self.decoding[edge].pop(sid, None)
        self._tpot_pred.pop(sid, None)
        self.watches[edge].pop(sid, None)
        self._ask.pop(sid, None)
        tpot = float(out.tpot_ms[sid])
        prefill = float(out.ttft_ms[sid]) - float(sim.rtt[edge, d]) - self.held_ms(sid)
        if sid in self._moved:  # the attempt after the move: from its own first token
            at, count, first_b = self._moved.pop(sid)
            rtt = float(sim.rtt[edge, d])
            prefill = first_b + rtt / 2 - at - rtt
            shift = (rtt - float(sim.rtt[edge, int(out.deployment[sid])])) / 2
            end = float(out.first_ms[sid]) + tpot * (int(st.output[sid]) - 1) - shift
            left = int(st.output[sid]) - count
            tpot = (end - first_b) / (left - 1) if left > 1 else math.nan
        stats.observe(dep, prefill_ms=prefill, uncached_tokens=max(work, 0),
                      tpot_ms=None if math.isnan(tpot) else tpot, load=load)
        session = int(st.session[sid])
        if session >= 0:
            stats.remember(_session_key(sid, session), dep, int(st.shared[sid]))


def _session_key(sid: int, session: int) -> str:
    return f"s{session}" if session >= 0 else f"u{sid}"


def _candidate(d: Deployment, rtt_ms: float) -> Candidate:
    # cost_usd / compute_ms × 1000 is the deployment's $/s (token_stats.usd_per_second)
    return Candidate(deployment_id=d.id, backend_id=d.id, endpoint=f"sim://{d.id}",
                     variant=d.variant.name, region=d.region, cloud=d.cloud,
                     accelerator=d.accelerator.name, quality=1.0,
                     latency_p95_ms=rtt_ms + UNMEASURED_P95_MS, rtt_ms=rtt_ms, queue_ms=0.0,
                     compute_ms=1000.0, cost_usd=d.usd_per_hour / 3600.0, spare_capacity=1.0)
