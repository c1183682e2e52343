"""``ModelStreamInfer`` (decoupled / token-streaming models) through the edge.

The stream is routed like a unary call on its first request and then pinned to the chosen
deployment for its whole life. Retries are the attempt policy's (``placement.attempts``, the
one the unary path drives): before the first response reaches the caller, a failed upstream
gets the requests sent so far replayed to the next candidate; after it the call is committed
and a failure ends the stream with the backend's status, unless the stream can be resumed.

An LLM stream (its first request carries a ``PROMPT``, see ``services.edge.tokens``) is chosen
by tokens (``placement.streams``: predicted TTFT/TPOT against ``x-ttft-ms``/``x-tpot-ms``, cost
per token, the session's prefix holder, bounded load; over the deployments that pass the
call's hard filters) and measured (``token_stats.StreamMeter``: token trailers). When its
backend fails after tokens were sent, the stream had one request, and its variant declares
``switchyard_resumable`` in its Triton model config (asked once per variant, of the serving
backend when the stream commits, else of another backend serving it), the policy may retry
it: the next deployment of the same variant (with ``x-allow-variant-change: true``, of any
variant of the model that declares it too) gets the prompt plus the tokens
already delivered and the tokens still owed, so the caller sees one stream with no token
missing or repeated, and ``x-resumed: N`` in the trailers.

Every later request must parse and name the stream's model; one that does not ends the
stream at once with INVALID_ARGUMENT saying which message and why (the reader watches the
request pump, so a bad message never leaves the stream waiting for a response that cannot
come).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from placement.attempts import CallAttempts
from placement.errors import BackendFailed, InvalidRequest, NoHealthyDeployment
from placement.model import CallContext, Candidate
from placement.pipeline import Profile
from placement.streams import StreamAsk, choose_stream
from services.edge import hints as hint_parser
from services.edge.router import AttemptFailed, CallRecord, Router, status_name
from services.edge.token_stats import StreamMeter
from services.edge.tokens import LlmRequest, parse_request, parse_token, resume_request
from services.edge.wire import rewrite_model_name, scan_model_name

# What writing to an upstream stream that has already ended raises; the request stays in
# ``sent`` and is replayed to the next attempt (or the reader reports the failure).
_WRITE_ERRORS = (grpc.aio.AioRpcError, asyncio.InvalidStateError)
# Soft filters an LLM stream's choice keeps (drained deployments, failure domains to avoid);
# the others are the token choice's own business.
_STREAM_SOFT_FILTERS = frozenset({"cordon", "avoid-region"})
PREFIX_KEY_TOKENS = 64  # no x-session-id: the hash of the prompt's first tokens is the key
DEFAULT_MAX_TOKENS = 16  # planning only, when neither request, hint nor model says


class _Pipe:
    """The caller's requests, forwarded to whichever upstream call is current."""

    def __init__(self, model: str, first: bytes) -> None:
        self.model = model
        self.sent = [first]
        self.call: grpc.aio.StreamStreamCall | None = None
        self.variant = model
        self.client_done = False
        self.lock = asyncio.Lock()  # a replay and the pump's writes never interleave

    def resume(self, request: bytes) -> None:
        """From now on the stream's request is ``request`` (a resumed generation)."""
        self.sent = [request]

    async def attach(self, call: grpc.aio.StreamStreamCall, variant: str) -> None:
        async with self.lock:
            self.call, self.variant = call, variant
            try:
                for req in self.sent:
                    await call.write(rewrite_model_name(req, self.model, variant))
                if self.client_done:
                    await call.done_writing()
            except _WRITE_ERRORS:
                pass  # the upstream already failed: its reader says how

    def check(self, req: bytes) -> None:
        n = len(self.sent) + 1
        try:
            name = scan_model_name(req)
        except InvalidRequest as exc:
            raise InvalidRequest(f"stream message {n}: {exc.message}") from None
        if name != self.model:
            raise InvalidRequest(f"stream message {n} names model {name!r}; this stream is "
                                 f"pinned to model {self.model!r}")

    async def pump(self, requests: AsyncIterator[bytes]) -> None:
        async for req in requests:
            self.check(req)
            async with self.lock:
                self.sent.append(req)
                assert self.call is not None
                with contextlib.suppress(*_WRITE_ERRORS):
                    await self.call.write(rewrite_model_name(req, self.model, self.variant))
        async with self.lock:
            self.client_done = True
            assert self.call is not None
            with contextlib.suppress(*_WRITE_ERRORS):
                await self.call.done_writing()


async def _read(call: grpc.aio.StreamStreamCall, pump: asyncio.Task[None]) -> object:
    """The next response, or the pump's error as soon as a request turns out to be bad."""
    if pump.done() and pump.exception() is None:
        return await call.read()
    read = asyncio.ensure_future(call.read())
    read.add_done_callback(_retrieve)
    try:
        await asyncio.wait({read, pump}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        read.cancel()
        raise
    if not read.done() and pump.exception() is not None:
        read.cancel()
        call.cancel()
        raise pump.exception()  # type: ignore[misc]
    return await read  # the pump ended normally (the caller half-closed): keep reading


def _retrieve(t: asyncio.Future[Any]) -> None:
    if not t.cancelled():
        t.exception()


async def route_stream(router: Router, requests: AsyncIterator[bytes],
                       metadata: Sequence[tuple[str, str | bytes]] | None,
                       time_remaining_s: float | None, record: CallRecord,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    start = router.clock()
    tries = router.attempt_policy.start(
        None if time_remaining_s is None else start + time_remaining_s)
    pump_task: asyncio.Task[None] | None = None
    probe: asyncio.Future[tuple[bool, int] | None] | None = None  # resumption, asked early
    meter = StreamMeter(start, 0)
    goals: hint_parser.StreamHints = hint_parser.StreamHints()
    try:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        model, cands, ctx, profile = router.read(first, metadata, time_remaining_s, record)
        goals = hint_parser.parse_stream(metadata)
        llm = parse_request(first)
        meter.tokens_in, meter.measured = (len(llm.prompt), True) if llm else (0, False)
        session = goals.session_id or (_prefix_key(llm) if llm else "")
        router.budget.call()
        pipe = _Pipe(model, first)
        failure: AttemptFailed | None = None
        delivered: list[int] = []
        while True:
            try:
                c, slo_met, cached = _choose(router, profile, cands, ctx, llm, goals, session,
                                             len(delivered))
            except NoHealthyDeployment:
                if failure is None:
                    raise
                raise _failed(failure) from None
            record.chosen, record.slo_met = c, slo_met
            if tries.committed:  # only a resumable stream is retried once committed
                meter.resumed += 1
            tries.started(c)
            call = router.upstreams.get(c.endpoint).stream(
                timeout=tries.remaining(router.clock()))
            await pipe.attach(call, c.variant)
            if pump_task is None:
                pump_task = asyncio.create_task(pipe.pump(requests))
            meter.segment(router.clock(), router.streams.started(c.deployment_id))
            context_tokens = (len(llm.prompt) if llm else 0) + len(delivered)
            try:
                while (resp := await _read(call, pump_task)) is not grpc.aio.EOF:
                    if llm is None:
                        meter.token(router.clock())
                    elif (token := parse_token(resp)) is not None:  # type: ignore[arg-type]
                        delivered.append(token)
                        meter.token(router.clock())
                    if not tries.committed:
                        tries.commit()
                        if llm is not None and router.streams.resumable(c.variant) is None:
                            # Ask the serving backend now: it may be dead when it matters.
                            probe = asyncio.ensure_future(_declared(router, c.variant, (c,), ""))
                        await context.send_initial_metadata(record.trailers())
                    yield resp  # type: ignore[misc]
            except grpc.aio.AioRpcError as err:
                failure = AttemptFailed(c, err)
                if probe is not None:
                    await asyncio.wait({probe}, timeout=2.0)
                owed = await _owed(router, tries, llm, pipe, c, cands, delivered)
                if owed == 0:  # every token asked for was delivered: the stream is whole
                    router.observe_success(c, (router.clock() - start) * 1000)
                    return
                verdict = tries.failed(c, failure.status, cands, router.clock(),
                                       router.budget.try_retry)
                router.observe_failure(failure, verdict.blames_backend)
                if not verdict.retry:
                    raise _failed(failure) from None
                ctx = dataclasses.replace(ctx, exclude=tries.exclude,
                                          avoid_regions=tries.avoid_regions)
                if tries.committed and llm is not None:
                    pipe.resume(resume_request(llm, delivered, model, owed or 1))
                    ctx = dataclasses.replace(ctx, exclude=ctx.exclude | await _not_resumable(
                        router, c, cands, goals.allow_variant_change))
                continue
            finally:
                router.streams.ended(c.deployment_id)
                meter.segment_ended(c, router.streams, context_tokens, cached)
                if llm is not None and meter.tokens_out:
                    router.streams.remember(session, c.deployment_id,
                                            len(llm.prompt) + len(delivered))
            router.observe_success(c, (router.clock() - start) * 1000)
            return
    except BaseException as exc:
        record.status = status_name(exc, tries, router.clock())
        raise
    finally:
        for task in (pump_task, probe):
            if task is not None:
                task.cancel()
                task.add_done_callback(_retrieve)
        record.stream = meter.trailers(goals.ttft_ms, goals.tpot_ms, record.status == "OK")
        if record.status == "OK" and (goals.ttft_ms is not None or goals.tpot_ms is not None):
            record.slo_met = all(meter.met(goals.ttft_ms, goals.tpot_ms))
        record.finish(tries, (router.clock() - start) * 1000)
        router.on_done(record)


def _prefix_key(llm: LlmRequest) -> str:
    head = llm.prompt[:PREFIX_KEY_TOKENS]
    return f"prefix:{zlib.crc32(repr(head).encode()):08x}"


def _choose(router: Router, profile: Profile, cands: Sequence[Candidate], ctx: CallContext,
            llm: LlmRequest | None, goals: hint_parser.StreamHints, session: str,
            delivered: int) -> tuple[Candidate, bool, int]:
    """(deployment, whether it meets the objectives, prompt tokens expected in its cache)."""
    if llm is None:
        d = profile.choose(cands, ctx, router.rng, cost_sorted=True)
        return d.candidate, d.slo_met, 0
    hard = [c for c in cands if all(f.reject(c, ctx) is None for f in profile.hard_filters)]
    if not hard:
        profile.choose(cands, ctx, router.rng, cost_sorted=True)  # raises the precise error
        raise NoHealthyDeployment("no deployment may serve this stream")
    soft = [f for f in profile.filters if f.name in _STREAM_SOFT_FILTERS]
    eligible = [c for c in hard if all(f.reject(c, ctx) is None for f in soft)] or hard
    known = router.streams.resumable(eligible[0].variant)
    asked = llm.max_tokens or goals.max_tokens or (known[1] if known else DEFAULT_MAX_TOKENS)
    holder, seen = router.streams.holder(session)
    ask = StreamAsk(prompt_tokens=len(llm.prompt) + delivered,
                    max_tokens=max(asked - delivered, 1), ttft_ms=goals.ttft_ms,
                    tpot_ms=goals.tpot_ms, session_key=session, holder=holder,
                    cached_tokens=min(seen, len(llm.prompt) + delivered))
    choice = choose_stream(eligible, router.streams.estimates(eligible),
                           router.streams.inflight, ask)
    return choice.candidate, choice.slo_met, choice.chosen.cache_hit_tokens


async def _owed(router: Router, tries: CallAttempts, llm: LlmRequest | None, pipe: _Pipe,
                failed: Candidate, cands: Sequence[Candidate], delivered: list[int]
                ) -> int | None:
    """After a committed LLM stream's upstream failed: the tokens still owed when it can be
    resumed (``tries.may_resume`` is then called), else None."""
    if (not tries.committed or llm is None or len(pipe.sent) != 1
            or tries.expired(router.clock())):
        return None
    declared = await _declared(router, failed.variant, cands, failed.backend_id)
    if declared is None or not declared[0]:
        return None
    asked = llm.max_tokens if llm.max_tokens is not None else declared[1]
    owed = max(asked - len(delivered), 0)
    if owed:
        tries.may_resume()
    return owed


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
                service_pb2.ModelConfigRequest(name=c.variant), timeout=2.0)
        except grpc.aio.AioRpcError:
            continue
        params = resp.config.parameters
        resumable = "switchyard_resumable" in params and (
            params["switchyard_resumable"].string_value == "true")
        tokens = params["tokens"].string_value if "tokens" in params else ""
        router.streams.declare(c.variant, resumable, int(tokens) if tokens.isdigit() else 0)
        return router.streams.resumable(c.variant)
    return None


async def _not_resumable(router: Router, failed: Candidate, cands: Sequence[Candidate],
                         allow_variant_change: bool) -> set[str]:
    """Deployments a resumed stream may not move to: other variants, unless the caller
    allows a change; then those whose variant does not declare resumption."""
    others = {c.variant for c in cands if c.variant != failed.variant}
    refused = set()
    for variant in others:
        declared = (await _declared(router, variant, cands, failed.backend_id)
                    if allow_variant_change else None)
        if declared is None or not declared[0]:
            refused.add(variant)
    return {c.deployment_id for c in cands if c.variant in refused}


def _failed(f: AttemptFailed) -> BackendFailed:
    return BackendFailed(f"{f.candidate.deployment_id} stream failed: {f.status}: "
                         f"{f.err.details()}", f.status)
