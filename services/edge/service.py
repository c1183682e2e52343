"""The edge's ``inference.GRPCInferenceService``: KServe v2 / Triton's protocol, unchanged.

``ModelInfer`` and ``ModelStreamInfer`` take and return raw bytes (no parse on the hot path).
The control RPCs answer for *logical* models: readiness from the route table and the edge's
own health view, metadata and config forwarded to a serving backend with the names mapped.
The proto is the one tritonclient ships (``tritonclient.grpc.service_pb2``), not a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import metadata as _metadata

import grpc
from google.protobuf.message import DecodeError, Message
from prometheus_client import Gauge
from tritonclient.grpc import service_pb2

from placement.errors import (
    DeadlineTooShort,
    InvalidRequest,
    NoHealthyDeployment,
    SwitchyardError,
    UnknownModel,
)
from placement.model import Candidate
from services.edge import deadline, statistics
from services.edge import hints as hint_parser
from services.edge.router import DEADLINE_SLACK_S, CallRecord, Router
from services.edge.stream import first_message, route_stream
from services.edge.wire import scan_model_name
from services.grpc_errors import AnyContext, AnyHandler, abort, status_of
from services.security.tenants import OPEN_RPCS, Admission, AuthSource, TenantGate
from services.security.transport import check_message_size
from services.security.xfcc import ForwardedCerts

SERVICE = "inference.GRPCInferenceService"
CONTROL_TIMEOUT_S = 2.0  # per attempt of a control RPC forwarded to a backend
# Triton protocol extensions the edge answers (ServerMetadata lists them).
EXTENSIONS = ("model_configuration", "statistics")
CONTROL_RPCS = ("ServerLive", "ServerReady", "ModelReady", "ModelMetadata", "ModelConfig",
                "RepositoryIndex", "ServerMetadata", "ModelStatistics")
# A call that ended before a whole message came: gRPC drops one cut short by the end of the
# call (a length prefix longer than the bytes sent) unseen, so the handler sees none at all.
CUT_SHORT = ("the caller half-closed the call before sending a whole one (a message cut "
             "short by the end of the call is dropped unread)")
try:
    _VERSION = _metadata.version("switchyard")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    _VERSION = "0"


def _expired(metadata: Sequence[tuple[str, str | bytes]], context: AnyContext) -> bool:
    """The call's deadline is past, or within the caller's slack (``DEADLINE_SLACK_S``)."""
    left = _remaining(metadata, context)
    return left is not None and left <= DEADLINE_SLACK_S


def _remaining(metadata: Sequence[tuple[str, str | bytes]], context: AnyContext) -> float | None:
    """The call's time left, from Envoy's start when the call came through its slow path
    (``deadline``)."""
    return deadline.time_remaining(metadata, context.time_remaining(), time.time())


class InferenceService:
    def __init__(self, router: Router, server_name: str = "switchyard-edge",
                 gate: TenantGate | None = None, max_message_bytes: int | None = None,
                 forwarded: ForwardedCerts | None = None, inflight: Gauge | None = None
                 ) -> None:
        """``max_message_bytes``: checked here, so the refusal carries trailers (the server
        receives up to ``transport.receive_limit`` of it). ``forwarded``: this is an Envoy
        edge's slow path, which reads a caller's certificate from its Envoy's header.
        ``inflight``: labelled ``kind`` (``unary``, ``stream``), up by one when a handler
        takes a call, down by one in its ``finally`` (however the call ends: answered, refused,
        failed, cancelled by its caller, past its deadline, given up)."""
        g = inflight if inflight is not None else Gauge("inflight", "", ["kind"], registry=None)
        self._unary, self._streams = g.labels("unary"), g.labels("stream")
        self.forwarded = forwarded
        self.router = router
        self.max_message_bytes = max_message_bytes
        self.gate = gate
        self.server_name = server_name

    # -- data plane ----------------------------------------------------------------------

    async def model_infer(self, requests: AsyncIterator[bytes],
                          context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """A unary call, taken as gRPC's stream-unary so that it is the edge's from its
        headers: a unary handler is handed its call only once its message is in, and a
        caller that never sent one, or half-closed the call with none, held an HTTP/2 stream
        until its deadline (for ever without one; tests/integration/test_hostile_round6.py).
        Only the first message is read, as gRPC reads a unary call's."""
        metadata = tuple(context.invocation_metadata() or ())  # a tuple already: not copied
        record = CallRecord(hint_parser.request_id(metadata), "")  # echoed even on rejection
        self._unary.inc()
        try:
            raw = await self._request(requests, metadata, context, record)
            self._admit(raw, metadata, context, record)
            response = await self.router.infer(raw, metadata, _remaining(metadata, context),
                                               record)
        except SwitchyardError as exc:
            code, message, trailers = status_of(exc)
            context.set_trailing_metadata(record.trailers() + trailers)
            await context.abort(code, message)
        finally:
            self._unary.dec()
            if record.admission is not None:
                record.admission.release()
        context.set_trailing_metadata(record.trailers())
        return response

    async def _request(self, requests: AsyncIterator[bytes],
                       metadata: Sequence[tuple[str, str | bytes]],
                       context: grpc.aio.ServicerContext[bytes, bytes],
                       record: CallRecord) -> bytes:
        """A ModelInfer's message: ``UNAVAILABLE`` after the edge's stream idle timeout
        without one (``stream.first_message``, as Envoy's fast path answers), and
        ``INVALID_ARGUMENT`` when the caller half-closed the call with none. A call ended so,
        or by its caller's deadline or cancel before its message came, is counted once with
        the status its caller saw."""
        try:
            try:
                return await first_message(requests, "call")
            except StopAsyncIteration:
                # gRPC ends the requests of a call whose caller's deadline passed or who
                # cancelled it as it does a half-close, and then cancels the handler: the
                # deadline is read here, a cancel is waited for a moment (deadline.cancel_heard)
                if _expired(metadata, context):
                    raise DeadlineTooShort("the call's deadline ran out before its message "
                                           "came") from None
                await deadline.cancel_heard(context)
                raise InvalidRequest(f"ModelInfer without a request message: {CUT_SHORT}"
                                     ) from None
        except SwitchyardError as exc:
            record.status = exc.grpc_code
            self.router.on_done(record)
            raise
        except asyncio.CancelledError:  # grpc cancels the handler: its caller's deadline
            record.status = ("DEADLINE_EXCEEDED" if _expired(metadata, context)  # or cancel
                             else "CANCELLED")
            self.router.on_done(record)
            raise

    async def model_stream_infer(self, requests: AsyncIterator[bytes],
                                 context: grpc.aio.ServicerContext[bytes, bytes]
                                 ) -> AsyncIterator[bytes]:
        metadata = tuple(context.invocation_metadata() or ())  # a tuple already: not copied
        record = CallRecord(hint_parser.request_id(metadata), "")  # echoed even on rejection
        self._streams.inc()
        try:
            self._admit(None, metadata, context, record)
            async for resp in route_stream(self.router, self._sized(requests), metadata,
                                           _remaining(metadata, context), record, context):
                yield resp
        except SwitchyardError as exc:
            code, message, trailers = status_of(exc)
            context.set_trailing_metadata(record.trailers() + trailers)
            await context.abort(code, message)
        finally:
            self._streams.dec()
            if record.admission is not None:
                record.admission.release()
        context.set_trailing_metadata(record.trailers())

    def _admit(self, raw: bytes | None, metadata: Sequence[tuple[str, str | bytes]],
               context: grpc.aio.ServicerContext[bytes, bytes], record: CallRecord) -> None:
        """Size and tenant checks before routing (``raw``: a ModelInfer's message; a stream
        is checked on its headers, before any); a call they refuse is still counted once (the
        router never sees it), a ModelInfer under the model its message names, as the router
        counts it (before, every such call was counted and logged under no model, the
        metric's ``unknown``: a tenant over its quota on ``summarize`` looked like calls to a
        model the mesh lacks)."""
        try:
            if raw is not None and self.max_message_bytes is not None:
                check_message_size(len(raw), self.max_message_bytes)
            record.admission = self._tenant(metadata, context)
        except SwitchyardError as exc:
            record.status = exc.grpc_code
            if raw is not None:
                with contextlib.suppress(SwitchyardError):  # bytes the router would refuse
                    record.model = scan_model_name(raw)
            self.router.on_done(record)
            raise

    def _tenant(self, metadata: Sequence[tuple[str, str | bytes]], context: AnyContext,
                quota: bool = True) -> Admission | None:
        """The caller's tenant by the gate (``quota``: a control RPC takes none)."""
        if self.gate is None:
            return None
        auth: AuthSource = context.auth_context
        if self.forwarded is not None:
            metadata, auth = self.forwarded.view(metadata, auth)
        return self.gate.admit(metadata, auth, quota=quota)

    def credential(self, context: AnyContext) -> None:
        """A control RPC's caller checked as a call's is, no quota taken (``OPEN_RPCS``)."""
        self._tenant(tuple(context.invocation_metadata() or ()), context, quota=False)

    async def _sized(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A stream's requests, each held to ``max_message_bytes`` as a unary request is."""
        async for raw in requests:
            if self.max_message_bytes is not None:
                check_message_size(len(raw), self.max_message_bytes)
            yield raw

    # -- control RPCs --------------------------------------------------------------------

    def _serving(self, model: str) -> list[Candidate]:
        cands = self.router.candidates(model)
        return [c for c in cands if not c.dropped_reason
                and c.deployment_id not in self.router.blocked]

    async def server_live(self, request: service_pb2.ServerLiveRequest,
                          context: AnyContext) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: service_pb2.ServerReadyRequest,
                           context: AnyContext) -> service_pb2.ServerReadyResponse:
        ready = any(self._serving(m) for m in self.router.store.candidates)
        return service_pb2.ServerReadyResponse(ready=ready)

    async def model_ready(self, request: service_pb2.ModelReadyRequest,
                          context: AnyContext) -> service_pb2.ModelReadyResponse:
        try:
            serving = bool(self._serving(request.name))
        except UnknownModel:
            return service_pb2.ModelReadyResponse(ready=False)
        if not serving or not request.version:
            return service_pb2.ModelReadyResponse(ready=serving)
        # A version the caller names is the backends' to answer (a call is sent on with it):
        # ready there, as Triton says (before: ready for any version, "9" included, whose
        # calls then failed NOT_FOUND).
        try:
            resp = await self._forward(request.name, "ModelReady", request, context)
        except SwitchyardError as exc:
            await abort(context, exc)
        assert isinstance(resp, service_pb2.ModelReadyResponse)
        return resp

    async def _forward(self, model: str, call: str, request: object,
                       context: AnyContext) -> object:
        """A control RPC answered by one serving deployment, in table order; whether and
        where to try again after a failure is the one attempt policy's, as for calls."""
        serving = self._serving(model)
        if not serving:
            await abort(context, UnknownModel(f"model {model!r} has no serving deployment"))
        tries = self.router.attempt_policy.start(None)
        last: grpc.aio.AioRpcError | None = None
        for c in serving:
            if c.deployment_id in tries.exclude:
                continue
            tries.started(c)
            request.name = c.variant  # type: ignore[attr-defined]
            try:
                stub = self.router.upstreams.get(c.endpoint).stub
                return await getattr(stub, call)(request, timeout=CONTROL_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                last = err
                verdict = tries.failed(c, err.code().name, serving, self.router.clock(),
                                       lambda: True)
                if not verdict.retry:
                    break
        assert last is not None
        await context.abort(last.code(), f"{call} failed on {tries.attempts} deployment(s): "
                                         f"{last.details()}")
        raise AssertionError("unreachable")

    async def model_metadata(self, request: service_pb2.ModelMetadataRequest,
                             context: AnyContext
                             ) -> service_pb2.ModelMetadataResponse:
        model = request.name
        try:
            resp = await self._forward(model, "ModelMetadata", request, context)
        except SwitchyardError as exc:
            await abort(context, exc)
        assert isinstance(resp, service_pb2.ModelMetadataResponse)
        resp.name = model
        return resp

    async def model_config(self, request: service_pb2.ModelConfigRequest,
                           context: AnyContext) -> service_pb2.ModelConfigResponse:
        model = request.name
        try:
            resp = await self._forward(model, "ModelConfig", request, context)
        except SwitchyardError as exc:
            await abort(context, exc)
        assert isinstance(resp, service_pb2.ModelConfigResponse)
        resp.config.name = model
        return resp

    async def server_metadata(self, request: service_pb2.ServerMetadataRequest,
                              context: AnyContext
                              ) -> service_pb2.ServerMetadataResponse:
        """The edge itself: its name, Switchyard's version, the extensions it implements."""
        return service_pb2.ServerMetadataResponse(name=self.server_name, version=_VERSION,
                                                  extensions=list(EXTENSIONS))

    async def model_statistics(self, request: service_pb2.ModelStatisticsRequest,
                               context: AnyContext
                               ) -> service_pb2.ModelStatisticsResponse:
        """Per logical model (the one asked for, else every one in the route table), the sum
        of its serving deployments' statistics, named with the logical model. A version the
        caller names with the model is the backends' to answer, as for ``ModelReady`` (before:
        version 1's statistics for any version, "7" and "abc" included, which Triton refuses
        INVALID_ARGUMENT)."""
        resp = service_pb2.ModelStatisticsResponse()
        try:
            if request.name:
                total, answered, refused = await self._statistics(request.name,
                                                                  request.version)
                if not answered and refused:  # the caller's version, in Triton's words
                    await context.abort(refused[-1].code(), f"ModelStatistics failed on "
                                                            f"{len(refused)} deployment(s): "
                                                            f"{refused[-1].details()}")
                if not answered:
                    raise NoHealthyDeployment(f"no serving deployment of model "
                                              f"{request.name!r} answered ModelStatistics")
                resp.model_stats.append(total)
            else:
                for m in sorted(self.router.store.candidates):
                    resp.model_stats.append((await self._statistics(m))[0])
        except SwitchyardError as exc:
            await abort(context, exc)
        return resp

    async def _statistics(self, model: str, version: str = "") -> tuple[
            service_pb2.ModelStatistics, int, list[grpc.aio.AioRpcError]]:
        """The model's statistics summed over its serving deployments; how many answered; the
        refusals of the caller's request (INVALID_ARGUMENT: a version a deployment lacks)."""
        pairs = sorted({(c.endpoint, c.variant) for c in self._serving(model)})

        async def one(endpoint: str, variant: str) -> service_pb2.ModelStatisticsResponse:
            stub = self.router.upstreams.get(endpoint).stub
            answer: service_pb2.ModelStatisticsResponse = await stub.ModelStatistics(
                service_pb2.ModelStatisticsRequest(name=variant, version=version),
                timeout=CONTROL_TIMEOUT_S)
            return answer

        total = service_pb2.ModelStatistics(name=model, version=version or "1")
        answered = 0
        refused: list[grpc.aio.AioRpcError] = []
        for r in await asyncio.gather(*(one(e, v) for e, v in pairs), return_exceptions=True):
            if isinstance(r, grpc.aio.AioRpcError):
                if r.code() is grpc.StatusCode.INVALID_ARGUMENT:
                    refused.append(r)
                continue  # else that deployment is down: the sum covers those that answered
            if isinstance(r, BaseException):
                raise r
            answered += 1
            for s in r.model_stats:
                statistics.add(total, s)
        return total, answered, refused

    async def repository_index(self, request: service_pb2.RepositoryIndexRequest,
                               context: AnyContext
                               ) -> service_pb2.RepositoryIndexResponse:
        resp = service_pb2.RepositoryIndexResponse()
        for m in sorted(self.router.store.candidates):
            ready = bool(self._serving(m))
            if request.ready and not ready:
                continue
            resp.models.append(service_pb2.RepositoryIndexResponse.ModelIndex(
                name=m, version="1", state="READY" if ready else "UNAVAILABLE",
                reason="" if ready else "no healthy deployment"))
        return resp

    def handlers(self) -> dict[str, AnyHandler]:
        def unary(rpc: str) -> AnyHandler:
            """A control RPC, taken from its headers as ``ModelInfer`` is, its caller's
            credential checked first (but for ``OPEN_RPCS``), and parsed here: bytes that are
            not its request (a name that is not UTF-8, say) are INVALID_ARGUMENT, where
            gRPC's deserializer answered UNKNOWN."""
            fn: Callable[..., Awaitable[Message]] = getattr(self, _snake(rpc))
            req_cls: type[Message] = getattr(service_pb2, rpc + "Request")

            async def handler(requests: AsyncIterator[bytes], context: AnyContext) -> Message:
                try:
                    if rpc not in OPEN_RPCS:
                        self.credential(context)
                    try:
                        raw: bytes | None = await first_message(requests, "call")
                    except StopAsyncIteration:
                        raw = None
                    request = _parsed(raw, req_cls)
                except SwitchyardError as exc:
                    await abort(context, exc)
                    raise AssertionError("unreachable") from exc
                return await fn(request, context)

            return grpc.stream_unary_rpc_method_handler(handler, response_serializer=getattr(
                service_pb2, rpc + "Response").SerializeToString)

        return {"ModelInfer": grpc.stream_unary_rpc_method_handler(self.model_infer),
                "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                    self.model_stream_infer), **{rpc: unary(rpc) for rpc in CONTROL_RPCS}}


def _snake(rpc: str) -> str:
    """``ModelStatistics`` -> ``model_statistics``: the method answering the RPC."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in rpc).lstrip("_")


def _parsed(raw: bytes | None, req_cls: type[Message]) -> Message:
    """``raw`` as a ``req_cls``; ``InvalidRequest`` naming it when it is none or does not
    parse (raised inside the handler's ``try``: the caller gets INVALID_ARGUMENT)."""
    name = req_cls.DESCRIPTOR.full_name
    if raw is None:
        raise InvalidRequest(f"{name} missing: {CUT_SHORT}")
    try:
        return req_cls.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"request bytes do not parse as {name}: {exc}") from None
