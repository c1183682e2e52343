"""``ModelStreamInfer`` (decoupled / token-streaming models) through the edge.

The stream is routed like a unary call on its first request and then pinned to the chosen
deployment for its whole life. If the upstream fails before the first response arrives, the
requests sent so far are replayed to the next candidate; after the first response a failure
ends the stream with the backend's status (a half-streamed answer cannot be resumed elsewhere
without duplicating tokens).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from placement.errors import BackendFailed, InvalidRequest
from services.edge.router import RETRYABLE, CallRecord, Router
from services.edge.wire import rewrite_model_name, scan_model_name


async def route_stream(router: Router, requests: AsyncIterator[bytes],
                       metadata: Sequence[tuple[str, str | bytes]] | None,
                       time_remaining_s: float | None, record: CallRecord,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    start = router.clock()
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        return
    model, cands, ctx, profile = router.read(first, metadata, time_remaining_s, record)
    sent: list[bytes] = [first]
    client_done = asyncio.Event()
    holder: dict[str, grpc.aio.StreamStreamCall] = {}
    variant_box = {"variant": model}

    async def pump() -> None:
        async for req in requests:
            name = scan_model_name(req)
            if name != model:
                raise InvalidRequest(f"a stream is pinned to model {model!r}; got {name!r}")
            sent.append(req)
            await holder["call"].write(rewrite_model_name(req, model, variant_box["variant"]))
        client_done.set()
        await holder["call"].done_writing()

    pump_task: asyncio.Task[None] | None = None
    try:
        while True:
            decision = profile.choose(cands, ctx, router.rng, cost_sorted=True)
            c = decision.candidate
            record.chosen, record.slo_met = c, decision.slo_met
            record.attempts += 1
            variant_box["variant"] = c.variant
            call = router.upstreams.get(c.endpoint).stream(
                timeout=None if time_remaining_s is None
                else max(0.001, time_remaining_s - (router.clock() - start)))
            holder["call"] = call
            for req in sent:
                await call.write(rewrite_model_name(req, model, c.variant))
            if client_done.is_set():
                await call.done_writing()
            if pump_task is None:
                pump_task = asyncio.create_task(pump())
            got_first = False
            try:
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        break
                    if not got_first:
                        got_first = True
                        await context.send_initial_metadata(record.trailers())
                    yield resp
            except grpc.aio.AioRpcError as err:
                router.stats.record(c.deployment_id, 0.0, ok=False)
                router._failure(c, err)
                retry = (not got_first and err.code() in RETRYABLE
                         and record.attempts < router.settings.max_attempts
                         and router.budget.try_retry())
                if not retry:
                    raise BackendFailed(f"{c.deployment_id} stream failed: "
                                        f"{err.code().name}: {err.details()}",
                                        err.code().name) from None
                ctx.exclude.add(c.deployment_id)  # type: ignore[union-attr]
                continue
            router.stats.record(c.deployment_id, (router.clock() - start) * 1000, ok=True)
            router.outliers.success(c.deployment_id)
            return
    finally:
        if pump_task is not None:
            pump_task.cancel()
        record.latency_ms = (router.clock() - start) * 1000
        router.on_done(record)
