"""Turning ``SwitchyardError`` into gRPC statuses: one interceptor, one helper.

Every server installs ``ErrorInterceptor``; the edge's hot path calls ``status_of`` directly
(it answers raw bytes through a generic handler and cannot afford a wrapper per call).
A retry hint travels as trailing metadata ``retry-after-ms`` beside the status message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import structlog

from placement.errors import SwitchyardError

log = structlog.get_logger("switchyard.errors")

# The context and handler of any RPC, for code that sees every method (interceptors, shared
# helpers) or whose messages are untyped (tritonclient's). Strings: grpc's runtime classes
# are not subscriptable, only its stubs' are.
AnyContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
AnyHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[AnyHandler | None]]"


# Bytes of a status message sent, percent-encoded: grpc-message is a trailer (printable
# ASCII as is, any other byte as %XX), and a client refuses trailers over 8 KiB, at random
# up to 16 KiB and always beyond, with RESOURCE_EXHAUSTED, which would hide the error (a
# message echoing a 100 KB field did).
MESSAGE_MAX_BYTES = 6000


def _capped(message: str) -> str:
    """``message`` cut where its percent-encoding would pass ``MESSAGE_MAX_BYTES``."""
    size = 0
    for i, ch in enumerate(message):
        size += 1 if " " <= ch <= "~" and ch != "%" else 3 * len(ch.encode())
        if size > MESSAGE_MAX_BYTES:
            return message[:i] + f"... ({len(message)} characters)"
    return message


def status_of(exc: SwitchyardError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, message and trailing metadata an error becomes."""
    code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
    trailers: tuple[tuple[str, str], ...] = ()
    if exc.retry_after_s is not None:
        trailers = (("retry-after-ms", str(int(exc.retry_after_s * 1000))),)
    message = exc.message
    if len(message) > MESSAGE_MAX_BYTES // 12:  # an echoed peer string must not cost the
        message = _capped(message)  # status itself (12: a 4-byte character encoded)
    return code, message, trailers


async def abort(context: AnyContext, exc: SwitchyardError) -> None:
    code, message, trailers = status_of(exc)
    if trailers:
        context.set_trailing_metadata(trailers)
    await context.abort(code, message)


def _wrap_unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: AnyContext) -> Any:
        try:
            return await fn(request, context)
        except SwitchyardError as exc:
            await abort(context, exc)
    return wrapper


def _wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: AnyContext) -> Any:
        try:
            async for item in fn(request, context):
                yield item
        except SwitchyardError as exc:
            await abort(context, exc)
    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps any ``SwitchyardError`` a handler raises to its status (and logs it once)."""

    async def intercept_service(
        self, continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> AnyHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream), **kw)
        return handler
