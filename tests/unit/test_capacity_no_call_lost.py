"""Issue 13, "no call lost while the plan changes": the capacity demo's rare failed call.

What happened (``switchyard up --config examples/mesh-capacity.toml --demo``): after the
demand shift every call asks ``x-min-quality 0.85``, and until the cheap pool's swap is
applied only the static H100's large variant meets it. While the L4's tritonserver loaded
its new variant on the same two shared cores, one H100 call took longer than the edge's
attempt timeout (``max(0.25 s, 4 × p95)``, ``placement.attempts``), far inside the caller's
10 s deadline. A timeout excludes the whole server from the retry, no other deployment met
the floor, and the call failed with DEADLINE_EXCEEDED and ~9.7 s of its deadline unused.

Here the same timing is forced with fakes and an injected clock (no sleep): a server that
answers after ``stall_s`` of the clock, an attempt that ends at its timeout when that is
shorter. The real edge ``Router``, route store, health view and pipeline decide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc
import pytest

from placement.errors import BackendFailed
from placement.model import Candidate
from placement.registry import PROFILES, build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb
from services.edge.budget import RetryBudget
from services.edge.health import HealthView
from services.edge.outlier import OutlierSettings
from services.edge.router import CallRecord, Router, RouterSettings
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.edge.wire import encode_name_field

RAW = encode_name_field("summarize")
FLOOR = [("x-min-quality", "0.85")]
DEADLINE_S = 10.0  # the demo's client deadline


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class StallingUpstreams:
    """A fake of the edge's upstream channels: each endpoint answers after ``stall_s[ep]``
    seconds of the fake clock, or fails with DEADLINE_EXCEEDED at the attempt's timeout when
    that comes first (as grpc does). Records each attempt's endpoint and timeout."""

    clock: FakeClock
    stall_s: dict[str, float]
    attempts: list[tuple[str, float | None]] = field(default_factory=list)
    _endpoint: str = ""

    def get(self, endpoint: str) -> StallingUpstreams:
        self._endpoint = endpoint
        return self

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        ep = self._endpoint
        self.attempts.append((ep, timeout))
        stall = self.stall_s[ep]
        if timeout is not None and timeout < stall:
            self.clock.t += timeout
            raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), details="Deadline Exceeded")
        self.clock.t += stall
        return ep.encode()


def deployment(backend: str, variant: str, quality: float, cost: float,
               p95_ms: float) -> Candidate:
    return Candidate(deployment_id=f"{backend}/{variant}", backend_id=backend,
                     endpoint=backend, variant=variant, region="east", cloud="aws",
                     accelerator="a", quality=quality, latency_p95_ms=p95_ms, rtt_ms=0,
                     queue_ms=0, compute_ms=p95_ms, cost_usd=cost, spare_capacity=100)


# The demo between the shift and the swap: the static H100 runs both variants, the L4 pool
# still runs only the small one.
H100_SMALL = deployment("use1-h100", "summarize-small", 0.72, 2e-5, 10)
H100_LARGE = deployment("use1-h100", "summarize-large", 0.90, 4e-5, 20)
L4_SMALL = deployment("use1-l4-1", "summarize-small", 0.72, 1e-5, 30)
L4_LARGE = deployment("use1-l4-1", "summarize-large", 0.90, 5e-5, 60)


def make_router(cands: list[Candidate], stall_s: dict[str, float]
                ) -> tuple[Router, StallingUpstreams, list[CallRecord], FakeClock]:
    clock = FakeClock()
    store = RouteStore("east", None)
    store.apply(placement_pb2.RouteUpdate(version=1, snapshot=True, tables=[
        placement_pb2.RouteTable(model="summarize", edge_region="east", version=1,
                                 default_slo_ms=300,
                                 candidates=[candidate_to_pb(c) for c in
                                             sorted(cands, key=lambda c: c.cost_usd)])]))
    up = StallingUpstreams(clock, stall_s)
    done: list[CallRecord] = []
    health = HealthView(store, OutlierSettings(), slow_start_s=10.0, clock=clock)
    health.table_changed()
    router = Router(store, up, health, EdgeStats(),  # type: ignore[arg-type]
                    RetryBudget(clock=clock), {n: build_profile(n) for n in PROFILES},
                    frozenset({"east"}), RouterSettings(), done.append, clock=clock,
                    rng=random.Random(0))
    return router, up, done, clock


async def test_a_slow_server_that_alone_meets_the_floor_gets_the_callers_deadline() -> None:
    # 0.4 s: beyond the attempt timeout (max(0.25, 4 x 20 ms)), far inside the 10 s deadline
    router, up, done, _ = make_router([H100_SMALL, H100_LARGE, L4_SMALL],
                                      {"use1-h100": 0.4, "use1-l4-1": 0.01})
    assert await router.infer(RAW, FLOOR, DEADLINE_S, CallRecord("", "")) == b"use1-h100"
    assert done[0].status == "OK" and done[0].attempts == 1
    ((ep, timeout),) = up.attempts
    assert ep == "use1-h100" and timeout == pytest.approx(DEADLINE_S)


async def test_with_somewhere_else_to_go_the_attempt_is_still_cut_short_and_retried() -> None:
    # After the swap the L4 runs the large variant too: a retry has somewhere to go, so the
    # slow H100 attempt keeps its short timeout and the call moves (the policy unchanged).
    # (priced above the H100's here, so the H100 is still the first choice)
    router, up, done, _ = make_router([H100_SMALL, H100_LARGE, L4_SMALL, L4_LARGE],
                                      {"use1-h100": 0.4, "use1-l4-1": 0.01})
    assert await router.infer(RAW, FLOOR, DEADLINE_S, CallRecord("", "")) == b"use1-l4-1"
    assert [ep for ep, _ in up.attempts] == ["use1-h100", "use1-l4-1"]
    # max(0.25 s, 4 x 20 ms), plus the request's bytes at 8 MB/s (attempts.next_timeout)
    assert up.attempts[0][1] == pytest.approx(0.25 + len(RAW) / 8e6)
    assert done[0].attempts == 2


async def test_a_server_slower_than_the_whole_deadline_still_fails_the_call() -> None:
    # the rest of the deadline is given, not more: a hung server still fails the call, as
    # the caller's deadline (the caller's own, so no outlier blame)
    router, up, done, _ = make_router([H100_SMALL, H100_LARGE, L4_SMALL],
                                      {"use1-h100": 60.0, "use1-l4-1": 0.01})
    with pytest.raises(BackendFailed) as err:
        await router.infer(RAW, FLOOR, DEADLINE_S, CallRecord("", ""))
    assert err.value.grpc_code == "DEADLINE_EXCEEDED"
    assert len(up.attempts) == 1 and up.attempts[0][1] == pytest.approx(DEADLINE_S)
    assert done[0].status == "DEADLINE_EXCEEDED"
    assert router.health.view().unusable == {}
