"""The edge's request path for one ``ModelInfer`` call, as named steps:

read hints → find candidates → choose → forward → on a retryable failure choose again.

Whether and where to try again is the attempt policy's (``placement.attempts``, the same
object the stream path and the cost simulator drive); this module does the I/O. A failure
the policy says is the caller's own (its deadline expired, it cancelled) is not held
against the backend. Who may be used is the health view's (``health.py``): each call reads
one immutable snapshot of it. Collaborators are passed in (route store, upstream pool,
health view, stats, retry budget, profiles), so a test can hand it fakes. Nothing here parses
tensors or calls placement. When outlier detection has ejected every deployment a call may
use, the call is tried on the one whose ejection ends soonest rather than refused (panic
routing, ``placement.panic``; never past the call's own hints).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import structlog

from placement.attempts import (
    GONE_HINT,
    SERVER_FAILURES,
    VARIANT_GONE,
    AttemptPolicy,
    AttemptSettings,
    CallAttempts,
    attempt_status,
)
from placement.errors import (
    BackendFailed,
    InvalidRequest,
    MessageTooLarge,
    NoHealthyDeployment,
    SwitchyardError,
    UnknownModel,
)
from placement.feedback import SloFeedback
from placement.model import CallContext, Candidate, Hints
from placement.panic import panic_choice
from placement.pipeline import Decision, Profile
from placement.shares import borrow_tail
from services.edge import hints as hint_parser
from services.edge.budget import RetryBudget
from services.edge.health import HealthView
from services.edge.routes import RouteStore
from services.edge.stalls import StallWatch
from services.edge.stats import EdgeStats
from services.edge.token_stats import StreamStats
from services.edge.upstream import Upstreams
from services.edge.wire import UNPARSEABLE, rewrite_model_name, scan_model_name
from services.security.tenants import Admission

log = structlog.get_logger("switchyard.edge")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    slo_margin_ms: float = 2.0
    deadline_margin_ms: float = 5.0
    max_attempts: int = 3
    fail_fast: bool = False
    default_profile: str = "cheapest"
    hedge_max_slo_ms: float = 0.0


@dataclass(slots=True)
class CallRecord:
    """What happened to one call, written once it is known: the access-log event and the
    trailers come from it. It carries no retry state (that is the call's ``CallAttempts``).
    ``status`` is always a gRPC status name."""

    request_id: str
    model: str
    hints: Hints | None = None
    chosen: Candidate | None = None  # the deployment that answered (or failed last)
    attempts: int = 0
    slo_met: bool = True
    latency_ms: float = 0.0
    status: str = "OK"
    admission: Admission | None = None  # the tenant's, from TenantGate.admit
    hedged: bool = False
    stream: tuple[tuple[str, str], ...] = ()  # a stream's token trailers (they win)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Every answer carries the request id; only a served call claims a deployment,
        a cost and whether its SLO was met."""
        c = self.chosen
        if c is None or self.status != "OK":
            return (("x-request-id", self.request_id), ("x-attempts", str(self.attempts)),
                    *self.stream)
        own = (("x-served-by", c.deployment_id), ("x-served-region", c.region),
               ("x-cost-usd", f"{c.cost_usd:.10f}"),
               ("x-slo-met", "true" if self.slo_met else "false"),
               ("x-attempts", str(self.attempts)), ("x-request-id", self.request_id))
        if not self.stream:
            return own
        keys = {k for k, _ in self.stream}
        return (*(kv for kv in own if kv[0] not in keys), *self.stream)

    def finish(self, tries: CallAttempts, latency_ms: float) -> None:
        self.attempts, self.hedged, self.latency_ms = tries.attempts, tries.hedged, latency_ms


# A caller's cancel this close to its deadline is its deadline: the caller's own timer
# starts before its grpc-timeout is read and sent, so it fires a little before the edge's
# deadline and the edge hears a cancel (a stream counted CANCELLED 5 ms before its deadline
# while its caller saw DEADLINE_EXCEEDED). 0.1 s was too little for a busy caller: in a CI
# run on a quiet host, streams through Envoy whose caller's event loop also ran 64 draining
# streams sent their headers more than 0.1 s after their timers started (2 of 60 counted
# CANCELLED, their callers saw DEADLINE_EXCEEDED; test_hostile_round5). A server cannot
# tell a caller's deadline from its cancel; a real cancel this close to the deadline is
# counted as the deadline.
DEADLINE_SLACK_S = 0.25
# A unary attempt silent this long on a backend its health checks find unreachable is given
# up (``stalls``; streams: 2 s, since tokens show a stream's progress and a call's answer is
# all it sends back). About what the 10 s keepalive pings found before they went every
# 5.5 min (``upstream.TRITON_KEEPALIVE``): a call with no deadline on its last attempt to a
# stopped backend waited for them.
CALL_SILENT_S = 10.0


def status_name(exc: BaseException, tries: CallAttempts | None, now: float) -> str:
    """The gRPC status name a call that raised ``exc`` ends with."""
    if isinstance(exc, SwitchyardError):
        return exc.grpc_code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # grpc cancels the handler when the caller's deadline passes or it cancels.
        return ("DEADLINE_EXCEEDED" if tries is not None and tries.expired(
            now + DEADLINE_SLACK_S) else "CANCELLED")
    return "UNKNOWN"


class AttemptFailed(Exception):
    """One attempt on ``candidate`` ended with ``err``."""

    def __init__(self, candidate: Candidate, err: grpc.aio.AioRpcError) -> None:
        super().__init__(f"{candidate.deployment_id}: {err.code().name}")
        self.candidate, self.err = candidate, err
        self.status = attempt_status(err.code().name, err.details() or "")  # the policy's


class Router:
    def __init__(self, store: RouteStore, upstreams: Upstreams, health: HealthView,
                 stats: EdgeStats, budget: RetryBudget, profiles: dict[str, Profile],
                 regions: frozenset[str], settings: RouterSettings,
                 on_done: Callable[[CallRecord], None],
                 clock: Callable[[], float] = time.perf_counter,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.upstreams = upstreams
        self.health = health  # who may be used; the router only feeds it and reads views
        self.stats = stats
        self.budget = budget
        self.profiles = profiles
        self.profile_names = tuple(profiles)
        self.regions = regions
        self.settings = settings
        self.attempt_policy = AttemptPolicy(AttemptSettings(settings.max_attempts,
                                                            settings.hedge_max_slo_ms))
        self.on_done = on_done
        self.clock = clock
        self.rng = rng or random.Random()
        self.inflight: dict[str, int] = {}  # calls this edge has in flight per deployment
        self.feedback = SloFeedback()  # margins learned from SLO misses (placement.feedback)
        self.streams = StreamStats()  # LLM streams: loads, token estimates, prefix holders
        self.stalls = StallWatch(clock)  # stream attempts waiting on each backend
        # unary attempts, given up later: a call sends nothing back until its answer
        self.call_stalls = StallWatch(clock, CALL_SILENT_S, "call")
        self.panics = 0  # calls sent to an ejected deployment: nothing else was left

    @property
    def blocked(self) -> Mapping[str, str]:
        """Deployments the edge will not use now, with why (a read-only snapshot)."""
        return self.health.view().unusable

    # -- the steps -----------------------------------------------------------------------

    def read(self, raw: bytes, metadata: Sequence[tuple[str, str | bytes]] | None,
             time_remaining_s: float | None, record: CallRecord
             ) -> tuple[str, Sequence[Candidate], CallContext, Profile]:
        """Read the model name and hints; find the model's candidates."""
        if not record.request_id:  # first: every answer echoes it, errors included
            record.request_id = hint_parser.request_id(metadata)
        model = scan_model_name(raw)
        record.model = model
        parsed = hint_parser.parse(metadata, self.regions, self.profile_names)
        cands = self.candidates(model)
        hints = hint_parser.resolve(parsed, time_remaining_s, self.store.default_slo_ms[model],
                                    self.settings.deadline_margin_ms, self.settings.fail_fast)
        if record.admission is not None:
            hints = record.admission.narrow(hints)
        record.hints = hints
        view = self.health.view()
        now = self.clock()
        ctx = CallContext(hints, self.settings.slo_margin_ms, frozenset(), frozenset(),
                          view.unusable, self.stats.p95, view.warming, self.rng.random(),
                          self.inflight, self.feedback.margins(hints.slo_ms, now),
                          borrow_tail=borrow_tail(self.feedback),
                          slo_excluded=self.feedback.excluded(hints.slo_ms, now))
        return model, cands, ctx, self.profiles[parsed.profile or self.settings.default_profile]

    def candidates(self, model: str) -> Sequence[Candidate]:
        cands = self.store.candidates.get(model)
        if cands is None:
            known = ", ".join(sorted(self.store.candidates)) or "none yet: no route table"
            raise UnknownModel(f"model {model!r} is not served by this mesh (known: {known})")
        return cands

    async def infer(self, raw: bytes, metadata: Sequence[tuple[str, str | bytes]] | None,
                    time_remaining_s: float | None, record: CallRecord) -> bytes:
        """Route one call; returns the backend's response bytes or raises SwitchyardError."""
        start = self.clock()
        tries = self.attempt_policy.start(
            None if time_remaining_s is None else start + time_remaining_s)
        try:
            model, cands, ctx, profile = self.read(raw, metadata, time_remaining_s, record)
            # The attempt policy's one "too little deadline left" rule, before anything is
            # chosen (it is asked again as each attempt starts: retries, hedges, streams).
            tries.check_time_left(self.clock())
            self.budget.call()
            failure: AttemptFailed | None = None
            while True:
                try:
                    decision = profile.choose(cands, ctx, self.rng, cost_sorted=True)
                except NoHealthyDeployment as exc:
                    panic = self.panic(cands, ctx, lambda c: profile.choose(
                        cands, c, self.rng, cost_sorted=True))
                    if panic is None:
                        if failure is None:
                            raise
                        raise _failed(failure, tries) from exc
                    decision = panic
                c = decision.candidate
                record.chosen, record.slo_met = c, decision.slo_met
                tries.started(c)
                try:
                    if tries.should_hedge(ctx.hints.slo_ms):
                        c, response = await self._hedged(c, model, raw, cands, ctx, profile,
                                                         tries)
                    else:
                        alone = not tries.last and self._alone(c, cands, ctx, profile)
                        response = await self._attempt(
                            c, model, raw, tries.next_timeout(c, self.clock(), alone=alone,
                                                              size_bytes=len(raw)))
                except AttemptFailed as f:
                    failure = f
                    record.chosen = f.candidate
                    verdict = tries.failed(f.candidate, f.status, cands, self.clock(),
                                           self.budget.try_retry)
                    self.observe_failure(f, verdict.blames_backend)
                    if not verdict.retry:
                        raise _failed(f, tries) from None
                    ctx = dataclasses.replace(ctx, exclude=tries.exclude,
                                              avoid_regions=tries.avoid_regions)
                    continue
                record.chosen = c
                now = self.clock()
                record.finish(tries, (now - start) * 1000)
                if record.hints is not None and record.latency_ms > record.hints.slo_ms:
                    record.slo_met = False
                self.feedback.record(c.deployment_id, ctx.hints.slo_ms,
                                     record.latency_ms <= ctx.hints.slo_ms, now)
                return response
        except BaseException as exc:
            now = self.clock()
            record.finish(tries, (now - start) * 1000)
            record.status = status_name(exc, tries, now)
            raise
        finally:
            self.on_done(record)

    def panic(self, cands: Sequence[Candidate], ctx: CallContext,
              choose: Callable[[CallContext], Decision]) -> Decision | None:
        """Every deployment the call may use is ejected by outlier detection: try the one
        whose ejection ends soonest, the call's own choice (``choose``) and filters applied
        (``placement.panic``); None when no ejected deployment may take it."""
        decision = panic_choice(cands, ctx, self.health.view().ejected_until, choose)
        if decision is not None:
            self.panics += 1
            log.warning("panic_routed", deployment=decision.candidate.deployment_id,
                        why=ctx.unusable.get(decision.candidate.deployment_id, ""))
        return decision

    def _alone(self, c: Candidate, cands: Sequence[Candidate], ctx: CallContext,
               profile: Profile) -> bool:
        """No deployment off ``c``'s server would take this call's retry (the pipeline's own
        filters decide: quality floor, residency, health): the attempt gets the rest of the
        deadline rather than a timeout that could only fail the call early."""
        server = {x.deployment_id for x in cands if x.backend_id == c.backend_id}
        try:
            profile.choose(cands, dataclasses.replace(ctx, exclude=ctx.exclude | server),
                           self.rng, cost_sorted=True)
        except SwitchyardError:
            return True
        return False

    async def _attempt(self, c: Candidate, model: str, raw: bytes,
                       timeout_s: float | None) -> bytes:
        """Forward once to ``c``; a failure is raised as ``AttemptFailed`` for the policy."""
        t0 = self.clock()
        dep = c.deployment_id
        self.inflight[dep] = self.inflight.get(dep, 0) + 1
        watch = self.call_stalls.watch(c.backend_id)
        call = self.upstreams.get(c.endpoint).infer(rewrite_model_name(raw, model, c.variant),
                                                    timeout=timeout_s)
        watch.aborted.add_done_callback(lambda f: f.cancelled() or call.cancel())
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as err:
            raise local_refusal(err, c) or AttemptFailed(c, err) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is None or task.cancelling()) or not watch.aborted.done() or (
                    watch.aborted.cancelled()):
                raise  # the caller's cancel (or a hedge's loser), not a give-up
            raise AttemptFailed(c, grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                details=watch.aborted.result())) from None
        finally:
            self.call_stalls.done(watch)
            self.inflight[dep] -= 1
        self.observe_success(c, (self.clock() - t0) * 1000)
        return response

    async def _hedged(self, first: Candidate, model: str, raw: bytes,
                      cands: Sequence[Candidate], ctx: CallContext, profile: Profile,
                      tries: CallAttempts) -> tuple[Candidate, bytes]:
        """Tight-SLO call: after ``first``'s p95, race a second candidate; cancel the loser.

        Every task started here is awaited or cancelled, and its outcome retrieved, on every
        way out (the caller cancelling included): no task exception goes unretrieved."""
        by_task: dict[asyncio.Future[bytes], Candidate] = {}

        def launch(c: Candidate) -> asyncio.Future[bytes]:
            t = asyncio.ensure_future(
                self._attempt(c, model, raw,
                              tries.next_timeout(c, self.clock(), size_bytes=len(raw))))
            by_task[t] = c
            return t

        t1 = launch(first)
        try:
            done, _ = await asyncio.wait({t1}, timeout=tries.hedge_after_s(ctx.latency_ms(first)))
            if done or not tries.hedge(first, self.budget.try_retry, self.clock()):
                return first, await t1
            try:
                second = profile.choose(cands, dataclasses.replace(ctx, exclude=tries.exclude),
                                        self.rng, cost_sorted=True).candidate
            except SwitchyardError:
                return first, await t1
            tries.started(second)
            launch(second)
            pending = set(by_task)
            failure: AttemptFailed | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = t.exception()
                    if exc is None:
                        return by_task[t], t.result()
                    if not isinstance(exc, AttemptFailed):
                        raise exc
                    if pending:  # the other leg still runs: this one only excludes
                        blame = tries.lost(exc.candidate, exc.status, cands, self.clock())
                        self.observe_failure(exc, blame)
                    failure = exc
            assert failure is not None
            raise failure
        finally:
            for t in by_task:
                if not t.done():
                    t.cancel()
                t.add_done_callback(_retrieve)

    # -- failure handling ----------------------------------------------------------------

    def observe_success(self, c: Candidate, latency_ms: float | None) -> None:
        self.stats.record(c.deployment_id, latency_ms, ok=True)
        self.health.success(c)

    def observe_failure(self, f: AttemptFailed, blames_backend: bool) -> None:
        """Feed a failure to stats and outlier detection, unless it is the caller's own."""
        if not blames_backend:
            return
        self.stats.record(f.candidate.deployment_id, 0.0, ok=False)
        self.health.failure(f.candidate, server_failure=f.status in SERVER_FAILURES)


def _retrieve(t: asyncio.Future[bytes]) -> None:
    """Mark a finished task's outcome as seen (asyncio logs unretrieved exceptions)."""
    if not t.cancelled():
        t.exception()



def local_refusal(err: grpc.aio.AioRpcError, c: Candidate) -> MessageTooLarge | None:
    """The edge's own channel to ``c`` refused a message over its size limit (gRPC says
    ``CLIENT: Sent/Received message larger than max``): the message, not the backend, is at
    fault, and every other deployment would refuse it the same way. The call ends with it,
    not retried and held against no backend (before, each such call spent three attempts
    and counted three failures towards ejecting healthy deployments)."""
    details = err.details() or ""
    if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or not details.startswith(
            "CLIENT: "):
        return None
    return MessageTooLarge(f"the edge's channel to {c.deployment_id} refused the message: "
                           f"{details.removeprefix('CLIENT: ')}; nothing was retried")


def _failed(f: AttemptFailed, tries: CallAttempts) -> SwitchyardError:
    err, where = f.err, f.candidate.deployment_id
    if err.code() is grpc.StatusCode.INTERNAL and (err.details() or "").startswith(UNPARSEABLE):
        # The caller's bytes, not the backend, are at fault: say so with the status that
        # means it (Triton answers INTERNAL).
        return InvalidRequest(f"request bytes do not parse as a ModelInferRequest "
                              f"({where} answered: {err.details()})")
    return BackendFailed(f"{where} failed after {tries.attempts} attempt(s): "
                         f"{err.code().name}: {err.details()}{gone_hint(f)}", caller_code(f))


def caller_code(f: AttemptFailed) -> str:
    """The status a caller gets for ``f``, the call's last failed attempt: the backend's,
    except that a variant gone from every deployment tried is UNAVAILABLE (the mesh's table
    is behind; a retry later finds the deployments that still serve it), not NOT_FOUND (the
    caller's model exists)."""
    return "UNAVAILABLE" if f.status == VARIANT_GONE else f.err.code().name


def gone_hint(f: AttemptFailed) -> str:
    return GONE_HINT if f.status == VARIANT_GONE else ""
