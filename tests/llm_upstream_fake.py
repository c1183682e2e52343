"""``FakeLlmUpstreams``: a fake demo-LLM upstream for ``route_stream`` unit tests (review10's
stream repros), fed to the real ``route_stream``, ``Generation``, ``Router`` and attempt policy
(``tests.unit.test_edge_resilience.make_router``).

Each backend generates token i of a prompt p as ``len(p) + i`` (a resumed request, the prompt
plus the tokens delivered, continues the same generation, as the demo model does), one
response per token, ``MAX_TOKENS`` of them or the backend's default. Each token read moves the
router's clock on by the backend's gap (``slow_gap_s`` after ``slow_after`` tokens, or the
first call's ``first_gap_s``). A backend may fail UNAVAILABLE after ``fail_after`` tokens (only
the first backend chosen: ``FakeLlmUpstreams.failed``). ``ModelConfig`` answers the backend's
``params`` (by default ``switchyard_resumable: "true"`` and ``tokens``: its default)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from services.edge.tokens import parse_request, parse_token
from services.edge.upstream import Upstreams
from tests.unit.test_stream_move_cap import token


class LlmCall:
    """One upstream ``ModelStreamInfer`` call on a ``LlmBackend``."""

    def __init__(self, ep: LlmBackend, gap_s: float | None) -> None:
        self.ep, self.gap_s = ep, gap_s
        self.q: asyncio.Queue[object] = asyncio.Queue()
        self.ended = self.cancelled = self.draining = False
        self.requests: list[bytes] = []

    async def write(self, req: bytes) -> None:
        self.requests.append(req)
        llm = parse_request(req)
        assert llm is not None
        n = llm.max_tokens if llm.max_tokens is not None else self.ep.default_tokens
        for i in range(n + 1):  # fail_after == n: the backend fails after its last token
            if (self.ep.fail_after is not None and i >= self.ep.fail_after
                    and not self.ep.ups.failed):
                self.ep.ups.failed = True
                await self.q.put(grpc.StatusCode.UNAVAILABLE)
                return
            if i < n:
                await self.q.put(token(len(llm.prompt) + i))

    async def done_writing(self) -> None:
        await self.q.put(grpc.aio.EOF)

    async def read(self) -> object:
        got = await self.q.get()
        await asyncio.sleep(0)
        if isinstance(got, grpc.StatusCode):
            self.ended = True
            raise grpc.aio.AioRpcError(got, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="backend died")
        if got is grpc.aio.EOF:
            self.ended = True
        elif not self.draining:  # a drained call's reads take no caller time
            ep = self.ep
            ep.sent += 1
            slow = ep.slow_after is not None and ep.sent > ep.slow_after
            ep.clock.t += (self.gap_s if self.gap_s is not None
                           else ep.slow_gap_s if slow else ep.gap_s)
        return got

    def done(self) -> bool:
        return self.ended or self.cancelled

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _ConfigStub:
    def __init__(self, ep: LlmBackend) -> None:
        self.ep = ep

    async def ModelConfig(self, req: Any, timeout: float | None = None) -> Any:
        self.ep.config_asks += 1
        resp = service_pb2.ModelConfigResponse()
        resp.config.name = req.name
        for k, v in self.ep.params.items():
            resp.config.parameters[k].string_value = v
        return resp


class LlmBackend:
    """One endpoint of ``FakeLlmUpstreams`` (see the module docstring)."""

    def __init__(self, ups: FakeLlmUpstreams, clock: Any, gap_s: float, fail_after: int | None,
                 default_tokens: int, params: dict[str, str] | None, slow_after: int | None,
                 slow_gap_s: float) -> None:
        self.ups, self.clock, self.gap_s, self.fail_after = ups, clock, gap_s, fail_after
        self.slow_after, self.slow_gap_s, self.sent = slow_after, slow_gap_s, 0
        self.default_tokens = default_tokens
        self.params = ({"switchyard_resumable": "true", "tokens": str(default_tokens)}
                       if params is None else params)
        self.calls: list[LlmCall] = []
        self.config_asks = 0
        self.stub = _ConfigStub(self)

    def stream(self, timeout: float | None = None) -> LlmCall:
        ups = self.ups
        c = LlmCall(self, ups.first_gap_s if not ups.made else None)
        ups.made += 1
        self.calls.append(c)
        return c


class FakeLlmUpstreams:
    """Stands in for ``Upstreams``: ``add`` an endpoint, then set ``router.upstreams``."""

    def __init__(self, clock: Any, first_gap_s: float | None = None) -> None:
        self.clock, self.first_gap_s = clock, first_gap_s
        self.backends: dict[str, LlmBackend] = {}
        self.failed = False  # a backend with ``fail_after`` failed already
        self.made = 0  # stream calls made, any backend
        self.draining: set[asyncio.Task[None]] = set()
        self.drains_refused = 0

    def add(self, endpoint: str, gap_s: float = 0.01, fail_after: int | None = None,
            default_tokens: int = 40, params: dict[str, str] | None = None,
            slow_after: int | None = None, slow_gap_s: float = 0.1) -> LlmBackend:
        b = LlmBackend(self, self.clock, gap_s, fail_after, default_tokens, params, slow_after,
                       slow_gap_s)
        self.backends[endpoint] = b
        return b

    def get(self, endpoint: str) -> LlmBackend:
        return self.backends[endpoint]

    def drain(self, call: Any, pending: Any, max_s: float | None = None) -> Any:
        call.draining = True
        return Upstreams.drain(self, call, pending, max_s)  # type: ignore[arg-type]


def tokens_of(responses: list[bytes]) -> list[int | None]:
    return [parse_token(r) for r in responses]
