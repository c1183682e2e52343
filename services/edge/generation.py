"""The token side of one stream (``stream.py`` drives it): how its deployment is chosen, what
it delivered, whether and how it may resume elsewhere.

A stream whose first request carries a prompt (``tokens.parse_request``) is an LLM stream: it
is chosen by tokens (``placement.streams`` over the deployments that pass the call's hard
filters, plus the cordon and avoid-region filters; with ``x-routing-profile: fastest``, the
lowest predicted TTFT + max_tokens × TPOT instead of the cheapest feasible), its responses
are read for their tokens, and after a failure that follows delivered tokens it may resume
when its variant declares ``switchyard_resumable`` (asked of the serving backend when the
stream commits, else of another backend serving the variant; remembered per variant by
``StreamStats``). With ``x-tpot-ms``, its pace is watched token by token
(``placement.stream_move.MoveWatch``): when it will miss the objective and a deployment it
may use (the choice's own filters, its variant unless ``x-allow-variant-change: true`` and
the other declares resumption too) is predicted to meet it, ``moving`` hands ``stream.py``
the request that resumes it there, once per stream (``x-resumed-reason: slow``). Any other
stream is chosen by the call's profile and its responses are only counted.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Sequence

import grpc
from tritonclient.grpc import service_pb2

from placement.attempts import CallAttempts
from placement.errors import CostCapReached, NoHealthyDeployment
from placement.model import CallContext, Candidate
from placement.pipeline import Profile
from placement.stream_move import MoveWatch, move_options
from placement.streams import StreamAsk, StreamChoice, choose_stream
from services.edge.hints import StreamHints
from services.edge.router import Router
from services.edge.token_stats import StreamMeter, usd_text
from services.edge.tokens import LlmRequest, parse_token, resume_request

# Soft filters an LLM stream's choice keeps (drained deployments, failure domains to avoid);
# the others are the token choice's own business.
STREAM_SOFT_FILTERS = frozenset({"cordon", "avoid-region"})
PREFIX_KEY_TOKENS = 64  # no x-session-id: the hash of the prompt's first tokens is the key
DEFAULT_MAX_TOKENS = 16  # planning only, when neither request, hint nor model says
PROBE_TIMEOUT_S = 2.0
FASTEST_REASON = ("profile fastest: the lowest predicted TTFT + max_tokens × TPOT, whatever "
                  "it costs")


class Generation:
    """One stream's tokens: delivered so far, measured by ``meter``, and its resumption."""

    def __init__(self, router: Router, llm: LlmRequest | None, goals: StreamHints,
                 meter: StreamMeter) -> None:
        self.router, self.llm, self.goals, self.meter = router, llm, goals, meter
        self.delivered: list[int] = []
        self.session = goals.session_id or (_prefix_key(llm) if llm else "")
        self._cached = 0  # prompt tokens the current attempt's deployment should have cached
        self._context_at_start = 0  # prompt + delivered tokens when the attempt started
        self._prefill: tuple[str, int] = ("", 0)  # (deployment, tokens) before a first token
        self._probe: asyncio.Future[tuple[bool, int] | None] | None = None
        self._others: list[asyncio.Future[tuple[bool, int] | None]] = []  # other variants'
        self.ask: StreamAsk | None = None  # what the last plan asked for
        self._asked = DEFAULT_MAX_TOKENS  # the stream's tokens in all, as the plan knew them
        self._length: int | None = None  # the generation's tokens in all, once known
        self._eligible: list[Candidate] = []  # what the last plan could choose from
        self._watch: MoveWatch | None = None
        self._move_to: Candidate | None = None  # where ``moving`` decided to continue
        self._cap = math.inf  # the caller's x-max-cost-usd: no response takes the cost past it
        self._on: Candidate | None = None  # the current attempt's deployment
        meter.tokens_in, meter.measured = (len(llm.prompt), True) if llm else (0, False)

    @property
    def context_tokens(self) -> int:
        return (len(self.llm.prompt) if self.llm else 0) + len(self.delivered)

    def choose(self, profile: Profile, cands: Sequence[Candidate], ctx: CallContext
               ) -> tuple[Candidate, bool]:
        """The deployment for the next attempt and whether it meets the objectives."""
        self._cap = ctx.hints.max_cost_usd
        if self.llm is None:
            d = profile.choose(cands, ctx, self.router.rng, cost_sorted=True)
            return d.candidate, d.slo_met
        if self._move_to is not None:  # ``moving`` chose it, predicted to meet the objective
            target, self._move_to = self._move_to, None
            return target, True
        choice = self.plan(profile, cands, ctx)
        return choice.candidate, choice.slo_met

    def plan(self, profile: Profile, cands: Sequence[Candidate], ctx: CallContext
             ) -> StreamChoice:
        """An LLM stream's choice by tokens over the deployments it may use, with every
        option's prediction (``switchyard explain --stream`` shows it). The ``fastest`` profile
        takes the lowest predicted TTFT + max_tokens × TPOT instead of the cheapest feasible."""
        llm, router = self.llm, self.router
        assert llm is not None
        hard = [c for c in cands if all(f.reject(c, ctx) is None for f in profile.hard_filters)]
        if not hard:
            profile.choose(cands, ctx, router.rng, cost_sorted=True)  # the precise error
            raise NoHealthyDeployment("no deployment may serve this stream")
        soft = [f for f in profile.filters if f.name in STREAM_SOFT_FILTERS]
        eligible = [c for c in hard if all(f.reject(c, ctx) is None for f in soft)] or hard
        known = router.streams.resumable(eligible[0].variant)
        asked = (llm.max_tokens or self.goals.max_tokens
                 or (known[1] if known and known[1] > 0 else DEFAULT_MAX_TOKENS))
        holder, seen = router.streams.holder(self.session)
        n = len(self.delivered)
        ask = StreamAsk(prompt_tokens=self.context_tokens, max_tokens=max(asked - n, 1),
                        ttft_ms=self.goals.ttft_ms, tpot_ms=self.goals.tpot_ms,
                        session_key=self.session, holder=holder,
                        cached_tokens=min(seen, self.context_tokens))
        self.ask, self._asked, self._eligible = ask, asked, eligible
        # x-max-cost-usd holds on the whole stream: a resume is priced against what the cap
        # leaves after what the stream has cost so far (as ``moving`` prices a move). Against
        # the whole cap, a resume after a failure went to a deployment the rest could not pay
        # for, and the stream was cut at its cap (tests/unit/test_stream_resume_cap.py).
        choice = choose_stream(eligible, router.streams.estimates(eligible),
                               router.streams.inflight, ask, pending=router.streams.pending,
                               max_cost_usd=ctx.hints.max_cost_usd - self.meter.cost_usd)
        if profile.name == "fastest":
            best = min(choice.options,
                       key=lambda o: (o.ttft_ms + ask.max_tokens * o.tpot_ms, o.cost_usd))
            choice = StreamChoice(best.candidate, best.feasible, FASTEST_REASON, choice.options)
        self._cached = choice.chosen.cache_hit_tokens
        return choice

    # -- one attempt -----------------------------------------------------------------------

    def attempt_started(self, c: Candidate) -> None:
        self._context_at_start, self._on = self.context_tokens, c
        self.meter.segment(self.router.clock(), self.router.streams.started(c.deployment_id))
        if self.llm is not None:
            self._prefill = (c.deployment_id, self.context_tokens - self._cached)
            self.router.streams.prefilling(*self._prefill)

    def response(self, resp: bytes) -> None:
        """Count ``resp``: a token of an LLM stream, or any response of another stream.
        ``CostCapReached`` when, with ``resp``, the stream's cost would be over the caller's
        ``x-max-cost-usd``: ``resp`` is not counted (nor sent) and the stream ends there.
        One clock reading both judges the cap and times the response, so the cost the
        trailers report for the responses sent is the cost the cap was judged on."""
        now = self.router.clock()
        self._within_cap(now)
        if self.llm is None:
            self.meter.token(now)
        elif (token := parse_token(resp)) is not None:
            self.delivered.append(token)
            self.meter.token(now)
            self._prefilled()
            if self._watch is None and self.goals.tpot_ms is not None:
                self._watch = MoveWatch(self.goals.tpot_ms, self._asked)
            if self._watch is not None:
                if self._on is not None and (length := self.length(self._on.variant)):
                    self._watch.total = length  # the plan's guess until the length is known
                self._watch.tokens(now, len(self.delivered))

    def length(self, variant: str) -> int | None:
        """The generation's tokens in all: the request's MAX_TOKENS, else the default output
        length ``variant`` declares (``tokens``; kept once known, so a stream moved to another
        variant keeps its own); None while neither is known. Not ``x-max-tokens``: that is
        only the length the choice plans for (README), and a move or resume that asked the
        next backend for ``x-max-tokens`` − delivered cut the generation short, or ran it on
        past its end."""
        if self._length is None:
            llm = self.llm
            if llm is not None and llm.max_tokens is not None:
                self._length = llm.max_tokens
            elif (known := self.router.streams.resumable(variant)) is not None and known[1] > 0:
                self._length = known[1]
        return self._length

    def _within_cap(self, now: float) -> None:
        if self._cap == math.inf or self._on is None:
            return
        cost = self.meter.cost_with(self._on, now)
        if float(usd_text(cost)) > self._cap:  # judged as x-cost-usd would report it
            self.meter.capped = True
            raise CostCapReached(
                f"x-max-cost-usd {self._cap:g}: the stream reached it after "
                f"{self.meter.tokens_out} responses (with the next one it would cost "
                f"${cost:.10f}); the rest was not sent")

    def moving(self, c: Candidate, model: str, requests_sent: int) -> bytes | None:
        """After a token on ``c``: when the stream will miss its TPOT objective there and a
        deployment it may use is predicted to meet it (``MoveWatch.decide``; with
        ``x-max-cost-usd``, only one whose predicted cost for the tokens owed, on top of what
        the stream has cost so far, is within the cap), the request that
        resumes it there (the next ``choose`` returns that deployment; the caller cancels the
        call on ``c``); else None. The request asks for the generation's tokens still owed
        (``length``), and a stream whose length is unknown does not move. Only a one-request
        stream whose variant declared resumption moves, as after a failure."""
        w, llm, streams = self._watch, self.llm, self.router.streams
        if w is None or llm is None or requests_sent != 1 or w.moves:
            return None
        now = self.router.clock()
        stay = w.stay_ms(now)
        if stay is None or stay <= w.miss_ms:
            w.decide(now, ())  # on pace: the hysteresis starts over
            return None
        declared = streams.resumable(c.variant)
        # the generation's length unknown: a move could not say what is owed
        length = self.length(c.variant)
        if declared is None or not declared[0] or length is None or length <= len(
                self.delivered):
            return None
        w.total = length
        allowed = [x for x in self._eligible if x.deployment_id != c.deployment_id and (
            x.variant == c.variant or (self.goals.allow_variant_change
                                       and (streams.resumable(x.variant) or (False, 0))[0]))]
        holder, seen = streams.holder(self.session)
        ask = StreamAsk(prompt_tokens=self.context_tokens, max_tokens=w.owed,
                        tpot_ms=self.goals.tpot_ms, session_key=self.session, holder=holder,
                        cached_tokens=min(seen, self.context_tokens))
        options = move_options(allowed, streams.estimates(allowed), streams.inflight, ask,
                               streams.pending)
        if self._cap < math.inf:  # x-max-cost-usd: the whole stream's cost, moved, within it
            spent = self.meter.cost_with(c, now)
            options = [o for o in options if spent + o.cost_usd <= self._cap]
        choice = w.decide(now, options)
        if choice.target is None:
            return None
        self._move_to = choice.target
        self._cached = ask.cached_tokens if choice.target.deployment_id == holder else 0
        self.meter.reasons.append("slow")
        return resume_request(llm, self.delivered, model, w.owed)

    def committed(self, c: Candidate) -> None:
        """The first response reached the caller: learn now whether the variant resumes (the
        backend may be dead when it matters); with ``x-allow-variant-change``, also whether
        the other variants it may use do (``moving`` moves only to one known to: asked of
        nobody else, a slow stream never moved to another variant this edge had not cached)."""
        if self.llm is None:
            return
        router = self.router
        if router.streams.resumable(c.variant) is None:
            self._probe = asyncio.ensure_future(_declared(router, c.variant, (c,), ""))
        if self.goals.allow_variant_change:
            others = sorted({x.variant for x in self._eligible} - {c.variant})
            self._others = [asyncio.ensure_future(_declared(router, v, self._eligible, ""))
                            for v in others if router.streams.resumable(v) is None]

    def attempt_ended(self, c: Candidate, draining: asyncio.Future[None] | None = None
                      ) -> None:
        """The stream is done with its attempt on ``c``. ``draining``: the attempt was let go
        of while the backend still generates (``Upstreams.drain``): it stays counted among
        ``c``'s streams until the drain ends, so a caller cancelling streams cannot make a
        busy backend look free to the next choices."""
        streams = self.router.streams
        if draining is None:
            streams.ended(c.deployment_id)
        else:
            draining.add_done_callback(lambda _t: streams.ended(c.deployment_id))
        self._prefilled()
        self.meter.segment_ended(c, streams, self._context_at_start, self._cached)
        if self.llm is not None and self.meter.tokens_out:
            streams.remember(self.session, c.deployment_id, self.context_tokens)

    def _prefilled(self) -> None:
        """The attempt's prompt no longer waits (a first token came, or the attempt ended)."""
        if self._prefill[1]:
            self.router.streams.prefilling(self._prefill[0], -self._prefill[1])
        self._prefill = ("", 0)

    # -- after a failure -------------------------------------------------------------------

    async def owed(self, tries: CallAttempts, requests_sent: int, failed: Candidate,
                   cands: Sequence[Candidate]) -> int | None:
        """After a committed stream's upstream failed: the tokens still owed when it can be
        resumed (``tries.may_resume`` is then called), else None. Only a one-request LLM
        stream can: with more, a resumed request could not say whose tokens were whose. Nor
        one whose generation's length is unknown (no MAX_TOKENS, and its variant declares no
        ``tokens``): read as 0 owed, its backend's death ended the stream OK and truncated."""
        llm = self.llm
        if (not tries.committed or llm is None or requests_sent != 1
                or tries.expired(self.router.clock())):
            return None
        if self._probe is not None:
            await asyncio.wait({self._probe}, timeout=PROBE_TIMEOUT_S)
        declared = await _declared(self.router, failed.variant, cands, failed.backend_id)
        if declared is None or not declared[0]:
            return None
        length = self.length(failed.variant)
        if length is None:  # neither MAX_TOKENS nor the variant's ``tokens``: owed unknown
            return None
        owed = max(length - len(self.delivered), 0)
        if owed:
            tries.may_resume()
        return owed

    async def resume(self, model: str, failed: Candidate, cands: Sequence[Candidate],
                     owed: int) -> tuple[bytes, set[str]]:
        """The request that continues the generation, and the deployments it may not move to
        (other variants, unless the caller allows a change to one that declares resumption
        too)."""
        assert self.llm is not None
        self.meter.reasons.append("failed")
        if self._watch is not None:
            self._watch.attempt_started()
        request = resume_request(self.llm, self.delivered, model, owed)
        refused = set()
        for variant in {c.variant for c in cands if c.variant != failed.variant}:
            declared = (await _declared(self.router, variant, cands, failed.backend_id)
                        if self.goals.allow_variant_change else None)
            if declared is None or not declared[0]:
                refused.add(variant)
        return request, {c.deployment_id for c in cands if c.variant in refused}

    def close(self) -> None:
        for probe in [*([self._probe] if self._probe is not None else []), *self._others]:
            if not probe.done():
                probe.cancel()
            probe.add_done_callback(_retrieve)


def _prefix_key(llm: LlmRequest) -> str:
    head = llm.prompt[:PREFIX_KEY_TOKENS]
    return f"prefix:{zlib.crc32(repr(head).encode()):08x}"


async def _declared(router: Router, variant: str, cands: Sequence[Candidate],
                    avoid_backend: str) -> tuple[bool, int] | None:
    """Whether ``variant`` declares resumption (its Triton model config, asked of a backend
    serving it other than ``avoid_backend``, once per variant) and its default output
    tokens; None when no backend could say."""
    known = router.streams.resumable(variant)
    if known is not None:
        return known
    for c in cands:
        if c.variant != variant or c.backend_id == avoid_backend:
            continue
        try:
            resp = await router.upstreams.get(c.endpoint).stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=c.variant), timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            continue
        params = resp.config.parameters
        resumable = "switchyard_resumable" in params and (
            params["switchyard_resumable"].string_value == "true")
        tokens = params["tokens"].string_value.strip() if "tokens" in params else ""
        # 0: no default length declared (``Generation.length`` reads it as unknown)
        router.streams.declare(c.variant, resumable, int(tokens) if tokens.isdigit() else 0)
        return router.streams.resumable(c.variant)
    return None


def _retrieve(t: asyncio.Future[tuple[bool, int] | None]) -> None:
    if not t.cancelled():
        t.exception()
