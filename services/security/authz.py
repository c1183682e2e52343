"""Who may call what on placement: a ``grpc.aio.ServerInterceptor`` over verified identities.

=======================================  ==================================================
method                                   allowed identities
=======================================  ==================================================
SetAvailability, UpdatePrices            admins
RegisterBackend, DeregisterBackend       admins, or the agent that owns that backend id
StreamTelemetry                          agents, each report only for the agent's backends
ReportObservations                       edges (any authenticated peer if none configured)
every other Placement RPC                any authenticated peer
health, reflection                       anyone
=======================================  ==================================================

No identity → UNAUTHENTICATED; an identity without the role → PERMISSION_DENIED. Every
denial, and every allowed admin call, is one JSON event on the ``switchyard.audit`` logger.
In plaintext mode nothing is authenticated (any local process may register, drain and
reprice), but :class:`AuditInterceptor` still records every admin call with its peer.
``reload(settings)`` swaps the policy atomically (one attribute assignment).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import structlog

from services.api.switchyard.v1 import placement_pb2
from services.grpc_errors import AnyContext, AnyHandler, Continuation
from services.security.identity import peer_address, peer_identities
from services.security.settings import SecuritySettings

audit = structlog.get_logger("switchyard.audit")

PLACEMENT = "/" + placement_pb2.DESCRIPTOR.services_by_name["Placement"].full_name + "/"
ADMIN_METHODS = frozenset({PLACEMENT + "SetAvailability", PLACEMENT + "UpdatePrices",
                           "/switchyard.v1.Capacity/ApprovePlan"})
OWNED_METHODS: dict[str, Callable[[Any], str]] = {
    PLACEMENT + "RegisterBackend": lambda req: req.backend.id,
    PLACEMENT + "DeregisterBackend": lambda req: req.backend_id,
}
TELEMETRY_METHOD = PLACEMENT + "StreamTelemetry"
EDGE_METHODS = frozenset({PLACEMENT + "ReportObservations"})


@dataclass(frozen=True)
class Denied:
    code: grpc.StatusCode
    reason: str


@dataclass(frozen=True)
class AuthzPolicy:
    admins: frozenset[str]
    agents: dict[str, frozenset[str]]  # identity -> backend ids it speaks for
    edges: frozenset[str]

    @classmethod
    def from_settings(cls, sec: SecuritySettings) -> AuthzPolicy:
        return cls(frozenset(sec.admin_identities),
                   {a.identity: frozenset(a.backends) for a in sec.agents},
                   frozenset(sec.edge_identities))

    def is_admin(self, ids: Iterable[str]) -> bool:
        return any(i in self.admins for i in ids)

    def backends_of(self, ids: Iterable[str]) -> frozenset[str]:
        owned: frozenset[str] = frozenset()
        for i in ids:
            owned |= self.agents.get(i, frozenset())
        return owned

    def check(self, method: str, ids: tuple[str, ...],  # noqa: PLR0911 - one return per rule
              request: Any = None) -> Denied | None:
        """None when allowed; otherwise the status and why."""
        if not ids:
            return Denied(grpc.StatusCode.UNAUTHENTICATED,
                          "no verified client certificate; this call needs an identity")
        if method in ADMIN_METHODS:
            if self.is_admin(ids):
                return None
            return Denied(grpc.StatusCode.PERMISSION_DENIED, "admin role required")
        if method in OWNED_METHODS:
            if self.is_admin(ids):
                return None
            backend = OWNED_METHODS[method](request)
            if backend in self.backends_of(ids):
                return None
            return Denied(grpc.StatusCode.PERMISSION_DENIED,
                          f"backend {backend!r} is not one of this identity's backends; "
                          "admin role or the owning agent required")
        if method == TELEMETRY_METHOD:
            if self.backends_of(ids):
                return None
            return Denied(grpc.StatusCode.PERMISSION_DENIED, "telemetry only from agents")
        if method in EDGE_METHODS and self.edges:
            if any(i in self.edges for i in ids) or self.is_admin(ids):
                return None
            return Denied(grpc.StatusCode.PERMISSION_DENIED, "edge role required")
        return None


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """Guards every Placement RPC by the table in the module docstring."""

    def __init__(self, policy: AuthzPolicy) -> None:
        self.policy = policy

    def reload(self, sec: SecuritySettings) -> None:
        self.policy = AuthzPolicy.from_settings(sec)

    async def intercept_service(
        self, continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> AnyHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(PLACEMENT):
            return handler
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_in(method, handler.stream_unary), **kw)
        if handler.unary_stream:
            # On an aio server it is an async generator (grpc's stubs type the sync server's).
            out = cast("Callable[..., AsyncIterator[Any]]", handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(self._stream_out(method, out), **kw)
        return self._deny_all(method, handler, kw)

    async def _refuse(self, context: AnyContext, method: str,
                      ids: tuple[str, ...], denied: Denied, **extra: Any) -> None:
        audit.warning("denied", method=method, identity=list(ids), peer=peer_address(context),
                      code=denied.code.name, reason=denied.reason, **extra)
        await context.abort(denied.code, f"{method}: {denied.reason}")

    def _unary(self, method: str, fn: Callable[..., Awaitable[Any]]
               ) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: AnyContext) -> Any:
            ids = peer_identities(context)
            denied = self.policy.check(method, ids, request)
            if denied is not None:
                await self._refuse(context, method, ids, denied)
            elif method in ADMIN_METHODS or method in OWNED_METHODS:
                audit.info("allowed", method=method, identity=list(ids),
                           peer=peer_address(context))
            return await fn(request, context)
        return guarded

    def _stream_out(self, method: str, fn: Callable[..., AsyncIterator[Any]]
                    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: AnyContext) -> AsyncIterator[Any]:
            ids = peer_identities(context)
            denied = self.policy.check(method, ids, request)
            if denied is not None:
                await self._refuse(context, method, ids, denied)
            async for item in fn(request, context):
                yield item
        return guarded

    def _stream_in(self, method: str, fn: Callable[..., Awaitable[Any]]
                   ) -> Callable[..., Awaitable[Any]]:
        async def guarded(requests: AsyncIterator[Any], context: AnyContext
                          ) -> Any:
            ids = peer_identities(context)
            denied = self.policy.check(method, ids)
            if denied is not None:
                await self._refuse(context, method, ids, denied)
            if method != TELEMETRY_METHOD:
                return await fn(requests, context)
            owned = self.policy.backends_of(ids)

            async def own_reports() -> AsyncIterator[Any]:
                async for report in requests:
                    if report.backend_id not in owned:
                        await self._refuse(context, method, ids, Denied(
                            grpc.StatusCode.PERMISSION_DENIED,
                            f"telemetry for backend {report.backend_id!r}, which is not "
                            f"one of this agent's backends {sorted(owned)}"),
                            backend=report.backend_id)
                    yield report
            return await fn(own_reports(), context)
        return guarded

    def _deny_all(self, method: str, handler: AnyHandler, kw: dict[str, Any]
                  ) -> AnyHandler:
        """A bidirectional Placement RPC has no rule yet: refuse it rather than leave it open."""
        async def refused(requests: Any, context: AnyContext) -> AsyncIterator[Any]:
            await self._refuse(context, method, peer_identities(context), Denied(
                grpc.StatusCode.PERMISSION_DENIED, "no authorisation rule for this method"))
            yield None  # pragma: no cover - abort raised
        return grpc.stream_stream_rpc_method_handler(refused, **kw)


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Plaintext mode: no identities to check, but every admin call is still audited."""

    async def intercept_service(
        self, continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> AnyHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or not handler.unary_unary or not (
                method in ADMIN_METHODS or method in OWNED_METHODS):
            return handler
        # On an aio server it is a coroutine function (grpc's stubs type the sync server's).
        fn = cast("Callable[[Any, AnyContext], Awaitable[Any]]", handler.unary_unary)

        async def audited(request: Any, context: AnyContext) -> Any:
            target = OWNED_METHODS[method](request) if method in OWNED_METHODS else ""
            audit.warning("allowed", method=method, identity=[], peer=peer_address(context),
                          authenticated=False, target=target,
                          reason="plaintext mode: admin calls are not authenticated")
            return await fn(request, context)
        return grpc.unary_unary_rpc_method_handler(
            audited, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def interceptors(sec: SecuritySettings) -> list[grpc.aio.ServerInterceptor]:
    """What placement installs in front of its own: authorisation under TLS; in plaintext
    only the audit of admin calls (there are no identities to check; ``transport.announce``
    says so)."""
    if sec.plaintext:
        return [AuditInterceptor()]
    return [AuthzInterceptor(AuthzPolicy.from_settings(sec))]
