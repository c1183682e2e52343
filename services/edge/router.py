"""The edge's request path for one ``ModelInfer`` call, as named steps:

read hints → find candidates → choose → forward → on a retryable failure choose again.

Collaborators are passed in (route store, upstream pool, outlier detector, stats, retry
budget, profiles), so a test can hand it fakes. Nothing here parses tensors or calls
placement.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from placement.errors import (
    BackendFailed,
    InvalidRequest,
    NoHealthyDeployment,
    SwitchyardError,
    UnknownModel,
)
from placement.model import CallContext, Candidate, Hints
from placement.pipeline import Profile
from services.edge import hints as hint_parser
from services.edge.budget import RetryBudget
from services.edge.outlier import OutlierDetector
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.edge.upstream import Upstreams
from services.edge.wire import rewrite_model_name, scan_model_name
from services.security.tenants import Admission

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.ABORTED})
SERVER_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
MIN_ATTEMPT_TIMEOUT_S = 0.25
ATTEMPT_TIMEOUT_FACTOR = 4.0  # an attempt may take this many times its p95 estimate


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
    """What happened to one call: the access-log event and the trailers come from it."""

    request_id: str
    model: str
    hints: Hints | None = None
    chosen: Candidate | None = None
    attempts: int = 0
    slo_met: bool = True
    latency_ms: float = 0.0
    status: str = "OK"
    tried: tuple[tuple[str, str], ...] = ()  # (cloud, region) of failed attempts
    admission: Admission | None = None  # the tenant's, from TenantGate.admit
    hedged: bool = False

    def trailers(self) -> tuple[tuple[str, str], ...]:
        if self.chosen is None:
            return (("x-request-id", self.request_id), ("x-attempts", str(self.attempts)))
        c = self.chosen
        return (("x-served-by", c.deployment_id), ("x-served-region", c.region),
                ("x-cost-usd", f"{c.cost_usd:.10f}"),
                ("x-slo-met", "true" if self.slo_met else "false"),
                ("x-attempts", str(self.attempts)), ("x-request-id", self.request_id))


class Router:
    def __init__(self, store: RouteStore, upstreams: Upstreams, outliers: OutlierDetector,
                 stats: EdgeStats, budget: RetryBudget, profiles: dict[str, Profile],
                 regions: frozenset[str], settings: RouterSettings,
                 on_done: Callable[[CallRecord], None],
                 clock: Callable[[], float] = time.perf_counter,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.upstreams = upstreams
        self.outliers = outliers
        self.stats = stats
        self.budget = budget
        self.profiles = profiles
        self.profile_names = tuple(profiles)
        self.regions = regions
        self.settings = settings
        self.on_done = on_done
        self.clock = clock
        self.rng = rng or random.Random()
        self.blocked: set[str] = set()  # ejected ∪ failing active health checks
        # Per-backend ejection for failures that are the server's, not the variant's
        # (timeouts, connection loss): a hung server blocks all its variants at once.
        self.backend_outliers = OutlierDetector(outliers.consecutive, outliers.base_s,
                                                outliers.max_s, outliers.max_share,
                                                outliers.clock, outliers.failure_rate,
                                                outliers.min_requests, outliers.interval_s)
        self.warming: dict[str, float] = {}  # slow start shares, owned by SlowStart
        self.inflight: dict[str, int] = {}  # calls this edge has in flight per deployment

    # -- the steps -----------------------------------------------------------------------

    def read(self, raw: bytes, metadata: Sequence[tuple[str, str | bytes]] | None,
             time_remaining_s: float | None, record: CallRecord
             ) -> tuple[str, Sequence[Candidate], CallContext, Profile]:
        """Read the model name and hints; find the model's candidates."""
        model = scan_model_name(raw)
        record.model = model
        parsed = hint_parser.parse(metadata, self.regions, self.profile_names)
        record.request_id = parsed.request_id
        cands = self.candidates(model)
        hints = hint_parser.resolve(parsed, time_remaining_s, self.store.default_slo_ms[model],
                                    self.settings.deadline_margin_ms, self.settings.fail_fast)
        if record.admission is not None:
            hints = record.admission.narrow(hints)
        record.hints = hints
        ctx = CallContext(hints, self.settings.slo_margin_ms, set(), set(), self.blocked,
                          self.stats.p95, self.warming, self.rng.random(), self.inflight)
        return model, cands, ctx, self.profiles[parsed.profile or self.settings.default_profile]

    def candidates(self, model: str) -> Sequence[Candidate]:
        cands = self.store.candidates.get(model)
        if cands is None:
            known = ", ".join(sorted(self.store.candidates)) or "none yet: no route table"
            raise UnknownModel(f"model {model!r} is not served by this mesh (known: {known})")
        return cands

    def attempt_timeout(self, c: Candidate, deadline: float | None, last: bool) -> float | None:
        """Per-attempt timeout: the remaining deadline, shortened while retries remain."""
        if deadline is None:
            return None if last else max(MIN_ATTEMPT_TIMEOUT_S,
                                         ATTEMPT_TIMEOUT_FACTOR * c.latency_p95_ms / 1000)
        remaining = deadline - self.clock()
        if last:
            return max(remaining, 0.001)
        bound = max(MIN_ATTEMPT_TIMEOUT_S, ATTEMPT_TIMEOUT_FACTOR * c.latency_p95_ms / 1000)
        return max(min(remaining, bound), 0.001)

    async def infer(self, raw: bytes, metadata: Sequence[tuple[str, str | bytes]] | None,
                    time_remaining_s: float | None, record: CallRecord) -> bytes:
        """Route one call; returns the backend's response bytes or raises SwitchyardError."""
        start = self.clock()
        deadline = None if time_remaining_s is None else start + time_remaining_s
        try:
            model, cands, ctx, profile = self.read(raw, metadata, time_remaining_s, record)
            self.budget.call()
            last_error: grpc.aio.AioRpcError | None = None
            while True:
                try:
                    decision = profile.choose(cands, ctx, self.rng, cost_sorted=True)
                except NoHealthyDeployment as exc:
                    if last_error is None:
                        raise
                    raise _failed(last_error, record) from exc
                c = decision.candidate
                record.chosen, record.slo_met = c, decision.slo_met
                record.attempts += 1
                last = (record.attempts >= self.settings.max_attempts)
                timeout = self.attempt_timeout(c, deadline, last)
                try:
                    if not last and 0 < ctx.hints.slo_ms <= self.settings.hedge_max_slo_ms:
                        response = await self._hedged(c, model, raw, cands, ctx, profile,
                                                      timeout, record)
                    else:
                        response = await self._attempt(c, model, raw, timeout)
                except grpc.aio.AioRpcError as err:
                    last_error = err
                    c = record.chosen
                    if not self._may_retry(err, deadline, record):
                        raise _failed(err, record) from None
                    ctx.exclude.add(c.deployment_id)  # type: ignore[union-attr]
                    if err.code() in SERVER_FAILURES:
                        # The server failed, not the variant: its other variants of this
                        # model would fail the same way (a cloud outage once spent two of
                        # three attempts on one dead backend's two variants).
                        ctx.exclude.update(  # type: ignore[union-attr]
                            x.deployment_id for x in cands if x.backend_id == c.backend_id)
                    ctx.avoid_regions.update(  # type: ignore[union-attr]
                        self._sick_regions(err, c, cands, record))
                    continue
                record.latency_ms = (self.clock() - start) * 1000
                if record.hints is not None and record.latency_ms > record.hints.slo_ms:
                    record.slo_met = False
                return response
        except BaseException as exc:
            record.latency_ms = (self.clock() - start) * 1000
            record.status = getattr(exc, "grpc_code", type(exc).__name__)
            raise
        finally:
            self.on_done(record)

    async def _attempt(self, c: Candidate, model: str, raw: bytes,
                       timeout_s: float | None) -> bytes:
        """Forward once to ``c``; record latency or failure for outlier detection."""
        t0 = self.clock()
        dep = c.deployment_id
        self.inflight[dep] = self.inflight.get(dep, 0) + 1
        try:
            response: bytes = await self.upstreams.get(c.endpoint).infer(
                rewrite_model_name(raw, model, c.variant), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            self.stats.record(c.deployment_id, 0.0, ok=False)
            self._failure(c, err)
            raise
        finally:
            self.inflight[dep] -= 1
        self.stats.record(c.deployment_id, (self.clock() - t0) * 1000, ok=True)
        self.outliers.success(c.deployment_id)
        self.backend_outliers.success(c.backend_id)
        return response

    async def _hedged(self, first: Candidate, model: str, raw: bytes,
                      cands: Sequence[Candidate], ctx: CallContext, profile: Profile,
                      timeout_s: float | None, record: CallRecord) -> bytes:
        """Tight-SLO call: after ``first``'s p95, race a second candidate; cancel the loser."""
        t1 = asyncio.ensure_future(self._attempt(first, model, raw, timeout_s))
        done, _ = await asyncio.wait({t1}, timeout=ctx.latency_ms(first) / 1000)
        if done or not self.budget.try_retry():
            return await t1
        ctx.exclude.add(first.deployment_id)  # type: ignore[union-attr]
        try:
            second = profile.choose(cands, ctx, self.rng, cost_sorted=True).candidate
        except SwitchyardError:
            return await t1
        record.attempts += 1
        record.hedged = True
        t2 = asyncio.ensure_future(self._attempt(second, model, raw, timeout_s))
        by_task = {t1: first, t2: second}
        pending: set[asyncio.Future[bytes]] = {t1, t2}
        error: grpc.aio.AioRpcError | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = t.exception()
                    if exc is None:
                        record.chosen = by_task[t]
                        return t.result()
                    if not isinstance(exc, grpc.aio.AioRpcError):
                        raise exc
                    error = exc
                    record.chosen = by_task[t]
        finally:
            for t in pending:
                t.cancel()
        assert error is not None
        raise error

    # -- failure handling ----------------------------------------------------------------

    def _failure(self, c: Candidate, err: grpc.aio.AioRpcError) -> None:
        code = err.code()
        if code not in RETRYABLE:
            return
        if self.outliers.failure(c.deployment_id):
            self.blocked.add(c.deployment_id)
        if code in SERVER_FAILURES and self.backend_outliers.failure(c.backend_id):
            self.blocked.update(self.store.deployments_of(c.backend_id))

    def _may_retry(self, err: grpc.aio.AioRpcError, deadline: float | None,
                   record: CallRecord) -> bool:
        if err.code() not in RETRYABLE or record.attempts >= self.settings.max_attempts:
            return False
        if deadline is not None and deadline - self.clock() < 0.002:
            return False
        return self.budget.try_retry()

    @staticmethod
    def _sick_regions(err: grpc.aio.AioRpcError, c: Candidate, cands: Sequence[Candidate],
                      record: CallRecord) -> set[str]:
        """Failure domains the rest of this call steers away from (softly), widening as
        failures correlate: a timeout, or a second failure in one region, marks the region;
        failures in two regions of one cloud mark every region of that cloud, so the next
        attempt crosses clouds instead of spending the call's last attempt on a cloud that
        is going down (a cloud-wide outage took three attempts in three aws regions)."""
        record.tried = (*record.tried, (c.cloud, c.region))
        same_cloud = {region for cloud, region in record.tried if cloud == c.cloud}
        if len(same_cloud) >= 2:
            return {x.region for x in cands if x.cloud == c.cloud}
        if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED or record.tried.count(
                (c.cloud, c.region)) >= 2:
            return {c.region}
        return set()


# Triton's answer to bytes whose tensors do not parse (the edge reads only the model name).
UNPARSEABLE = "Unable to parse request"


def _failed(err: grpc.aio.AioRpcError, record: CallRecord) -> SwitchyardError:
    where = record.chosen.deployment_id if record.chosen else "?"
    if err.code() is grpc.StatusCode.INTERNAL and (err.details() or "").startswith(UNPARSEABLE):
        # The caller's bytes, not the backend, are at fault: say so with the status that
        # means it (Triton answers INTERNAL).
        return InvalidRequest(f"request bytes do not parse as a ModelInferRequest "
                              f"({where} answered: {err.details()})")
    return BackendFailed(f"{where} failed after {record.attempts} attempt(s): "
                         f"{err.code().name}: {err.details()}", err.code().name)
