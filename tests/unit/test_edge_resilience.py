"""The edge's request path with fake upstreams: retries, hedging, budget, ejection, slow start,
the health view, and what a call records (status names, trailers).

Clocks are injected; nothing sleeps except where a hedge must see a slow first attempt.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import grpc
import pytest

from placement.errors import BackendFailed, DeadlineTooShort, NoHealthyDeployment
from placement.model import Candidate
from placement.registry import PROFILES, build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb
from services.edge.budget import RetryBudget
from services.edge.health import CHECK_FAILING, OUTLIER, SERVER_OUTLIER, HealthView
from services.edge.outlier import OutlierDetector, OutlierSettings
from services.edge.router import CallRecord, Router, RouterSettings
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.edge.wire import encode_name_field


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom")


@dataclass
class FakeUpstream:
    """Answers per endpoint: bytes, an error code, or a delay then bytes."""

    behaviour: dict[str, object]
    calls: list[tuple[str, bytes]] = field(default_factory=list)

    def get(self, endpoint: str) -> FakeUpstream:
        self._endpoint = endpoint
        return self

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        ep = self._endpoint
        self.calls.append((ep, raw))
        b = self.behaviour[ep]
        if isinstance(b, grpc.StatusCode):
            raise rpc_error(b)
        if isinstance(b, float):
            await asyncio.sleep(b)  # the fake backend's service time, not a wait
            return ep.encode()
        return ep.encode()


def cand(i: int, cost: float, lat: float, region: str = "east", cloud: str = "c"
         ) -> Candidate:
    return Candidate(deployment_id=f"b{i}/m-v", backend_id=f"b{i}", endpoint=f"ep{i}",
                     variant="m-v", region=region, cloud=cloud, accelerator="a", quality=0.8,
                     latency_p95_ms=lat, rtt_ms=0, queue_ms=0, compute_ms=lat, cost_usd=cost,
                     spare_capacity=100)


def make_router(cands: list[Candidate], behaviour: dict[str, object], clock: Clock,
                outliers: OutlierSettings | None = None,
                **settings: object) -> tuple[Router, FakeUpstream, list[CallRecord]]:
    store = RouteStore("east", None)
    store.apply(placement_pb2.RouteUpdate(version=1, snapshot=True, tables=[
        placement_pb2.RouteTable(model="m", edge_region="east", version=1, default_slo_ms=100,
                                 candidates=[candidate_to_pb(c) for c in cands])]))
    up = FakeUpstream(behaviour)
    done: list[CallRecord] = []
    health = HealthView(store, outliers or OutlierSettings(), slow_start_s=10.0, clock=clock)
    health.table_changed()
    router = Router(store, up, health, EdgeStats(),  # type: ignore[arg-type]
                    RetryBudget(clock=clock), {n: build_profile(n) for n in PROFILES},
                    frozenset({"east", "west"}), RouterSettings(**settings),  # type: ignore[arg-type]
                    done.append, clock=clock, rng=random.Random(0))
    return router, up, done


RAW = encode_name_field("m")


async def test_retryable_failure_goes_to_the_next_candidate_with_the_variant_name() -> None:
    clock = Clock()
    router, up, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                                   {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, clock)
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "100")], 2.0, rec) == b"ep1"
    assert [e for e, _ in up.calls] == ["ep0", "ep1"]
    assert up.calls[1][1].endswith(encode_name_field("m-v"))  # rewritten to the variant
    assert rec.attempts == 2 and rec.chosen and rec.chosen.deployment_id == "b1/m-v"
    assert done == [rec]


async def test_non_retryable_status_is_passed_through() -> None:
    router, up, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                                {"ep0": grpc.StatusCode.INVALID_ARGUMENT, "ep1": b""}, Clock())
    with pytest.raises(BackendFailed) as err:
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert err.value.grpc_code == "INVALID_ARGUMENT" and len(up.calls) == 1


async def test_bytes_triton_cannot_parse_are_invalid_argument_not_internal() -> None:
    from placement.errors import InvalidRequest

    class Unparseable(FakeUpstream):
        async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
            self.calls.append((self._endpoint, raw))
            raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(),
                                       details="Unable to parse request: bad tensor")

    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Unparseable({})
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(InvalidRequest, match="do not parse as a ModelInferRequest"):
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert len(up.calls) == 1  # the caller's fault: not retried elsewhere
    assert not router.blocked  # and not held against the backend


def not_found(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details=details)


class Gone(FakeUpstream):
    """Backends that answer Triton's NOT_FOUND for the variant (``gone``: endpoint -> details)."""

    gone: dict[str, str]

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((self._endpoint, raw))
        if self._endpoint in self.gone:
            raise not_found(self.gone[self._endpoint])
        return self._endpoint.encode()


async def test_a_variant_unloaded_under_a_call_is_served_elsewhere_not_found_to_no_caller(
        ) -> None:
    """A backend shutting down (SIGTERM) or unloading a variant answers NOT_FOUND "has no
    available versions" until placement's table drops it: passed through, every such call
    failed NOT_FOUND for a model that exists (a pool shrunk without its drain lost 23 calls
    in tests/integration/test_capacity_mesh.py)."""
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Gone({})
    up.gone = {"ep0": "Request for unknown model: 'm-v' has no available versions"}
    router.upstreams = up  # type: ignore[assignment]
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "100")], 2.0, rec) == b"ep1"
    assert [e for e, _ in up.calls] == ["ep0", "ep1"] and rec.attempts == 2
    assert router.stats.by_deployment["b0/m-v"].failures == 1  # held against the deployment


async def test_a_variant_gone_everywhere_is_unavailable_and_says_why() -> None:
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Gone({})
    up.gone = dict.fromkeys(("ep0", "ep1"), "Request for unknown model: 'm-v' is not found")
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(BackendFailed) as err:
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert err.value.grpc_code == "UNAVAILABLE" and len(up.calls) == 2
    assert "unloaded there or its server is shutting down" in err.value.message


async def test_a_version_the_caller_asked_for_stays_its_own_not_found() -> None:
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Gone({})
    up.gone = dict.fromkeys(("ep0", "ep1"),
                            "Request for unknown model: 'm-v' version 7 is not found")
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(BackendFailed) as err:
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert err.value.grpc_code == "NOT_FOUND" and len(up.calls) == 1


async def test_everything_failing_ends_with_the_last_backend_status() -> None:
    router, _up, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                                {"ep0": grpc.StatusCode.UNAVAILABLE,
                                 "ep1": grpc.StatusCode.UNAVAILABLE}, Clock())
    with pytest.raises(BackendFailed) as err:
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert err.value.grpc_code == "UNAVAILABLE" and "2 attempt" in err.value.message


async def test_consecutive_failures_eject_and_ejection_expires_into_slow_start() -> None:
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                               {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, clock)
    health = router.health
    for _ in range(3):
        await router.infer(RAW, [], 2.0, CallRecord("", ""))
    assert health.view().unusable == {"b0/m-v": SERVER_OUTLIER}  # UNAVAILABLE: the server
    clock.t += 6  # base ejection 5 s
    health.tick()
    assert health.view().unusable == {}
    assert health.view().warming == {"b0/m-v": pytest.approx(0.1)}
    clock.t += 5
    health.tick()
    assert health.view().warming["b0/m-v"] == pytest.approx(0.55)
    clock.t += 6
    health.tick()
    assert health.view().warming == {}


async def test_retry_budget_caps_retries() -> None:
    clock = Clock()
    router, _up, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                                {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, clock,
                                OutlierSettings(consecutive=10**6))  # keep the failing one
    router.budget = RetryBudget(ratio=0.0, min_per_s=0.1, window_s=10, clock=clock)
    outcomes = []
    for _ in range(3):
        try:
            await router.infer(RAW, [], 2.0, CallRecord("", ""))
            outcomes.append("ok")
        except BackendFailed:
            outcomes.append("failed")
    assert outcomes == ["ok", "failed", "failed"]  # one retry allowed in the window


async def test_tight_slo_call_is_hedged_and_the_loser_cancelled() -> None:
    router, _up, _ = make_router([cand(0, 1e-6, 2), cand(1, 2e-6, 2)],
                                {"ep0": 0.5, "ep1": b""}, Clock(), hedge_max_slo_ms=50)
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "30")], 2.0, rec) == b"ep1"
    assert rec.hedged and rec.attempts == 2
    assert rec.chosen is not None and rec.chosen.deployment_id == "b1/m-v"


async def test_loose_slo_call_is_not_hedged() -> None:
    router, up, _ = make_router([cand(0, 1e-6, 2), cand(1, 2e-6, 2)],
                                {"ep0": 0.01, "ep1": b""}, Clock(), hedge_max_slo_ms=50)
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "300")], 2.0, rec) == b"ep0"
    assert not rec.hedged and [e for e, _ in up.calls] == ["ep0"]


async def test_residency_holds_on_failover() -> None:
    router, up, _ = make_router([cand(0, 1e-6, 5, "west"), cand(1, 2e-6, 5, "east")],
                                {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, Clock())
    with pytest.raises(BackendFailed):
        await router.infer(RAW, [("x-allowed-regions", "west")], 2.0, CallRecord("", ""))
    assert [e for e, _ in up.calls] == ["ep0"]  # never served from east
    router.health.checked("b0", ok=False)
    router.health.checked("b0", ok=False)  # unhealthy after 2 failed checks
    with pytest.raises(NoHealthyDeployment):
        await router.infer(RAW, [("x-allowed-regions", "west")], 2.0, CallRecord("", ""))


async def test_failures_in_two_regions_of_one_cloud_send_the_last_attempt_to_another_cloud(
) -> None:
    # A cloud-wide outage: the three cheapest are in three regions of cloud "a"; the call
    # must not spend its last attempt on the third of them.
    cands = [cand(0, 1e-6, 5, "a1", "a"), cand(1, 2e-6, 5, "a2", "a"),
             cand(2, 3e-6, 5, "a3", "a"), cand(3, 9e-6, 5, "b1", "b")]
    dead = grpc.StatusCode.UNAVAILABLE
    router, up, _ = make_router(cands, {"ep0": dead, "ep1": dead, "ep2": dead, "ep3": b""},
                                Clock())
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "1000")], 2.0, rec) == b"ep3"
    tried = [e for e, _ in up.calls]
    assert len(tried) == 3 and set(tried[:2]) <= {"ep0", "ep1", "ep2"} and tried[2] == "ep3"


async def test_a_dead_server_is_excluded_with_all_its_variants() -> None:
    import dataclasses
    small = cand(0, 1e-6, 5, "a1", "a")
    large = dataclasses.replace(small, deployment_id="b0/m-large", variant="m-large",
                                cost_usd=2e-6)
    router, up, _ = make_router([small, large, cand(1, 3e-6, 5, "a1", "a")],
                                {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, Clock())
    rec = CallRecord("", "")
    assert await router.infer(RAW, [("x-slo-ms", "1000")], 2.0, rec) == b"ep1"
    assert [e for e, _ in up.calls] == ["ep0", "ep1"] and rec.attempts == 2


async def test_one_failure_does_not_steer_away_from_its_region() -> None:
    # One dead backend is common; its healthy neighbour in the same region stays first choice.
    cands = [cand(0, 1e-6, 5, "a1", "a"), cand(1, 2e-6, 5, "a1", "a"),
             cand(2, 3e-6, 5, "b1", "b")]
    router, up, _ = make_router(cands, {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b"",
                                        "ep2": b""}, Clock())
    for _ in range(20):
        assert await router.infer(RAW, [("x-slo-ms", "1000")], 2.0, CallRecord("", "")) == b"ep1"
    assert "ep2" not in {e for e, _ in up.calls}


async def test_outlier_ejection_caps_the_share_ejected() -> None:
    clock = Clock()
    o = OutlierDetector(consecutive=1, max_share=0.5, clock=clock)
    o.known({"a", "b", "c", "d"})
    assert [o.failure(k) for k in "abcd"] == [True, True, False, False]
    clock.t += 6
    assert sorted(o.tick()) == ["a", "b"]
    assert o.failure("a")  # ejected again: for longer
    assert o.ejected_for("a") == pytest.approx(10.0)


def test_failure_rate_ejects_a_gray_failure_that_never_fails_three_in_a_row() -> None:
    clock = Clock()
    o = OutlierDetector(consecutive=3, failure_rate=0.5, min_requests=20, interval_s=10,
                        clock=clock)
    o.known({"gray", "fine"})
    for _ in range(15):  # fails every other call: consecutive detection never fires
        o.failure("gray")
        o.success("gray")
        o.success("fine")
    assert o.ejected == set()
    clock.t += 10
    o.tick()
    assert o.ejected == {"gray"}
    # Too few calls in the window: no verdict.
    o2 = OutlierDetector(failure_rate=0.5, min_requests=20, interval_s=10, clock=clock)
    o2.known({"a", "b"})
    for _ in range(5):
        o2.failure("a")
        o2.success("a")
    clock.t += 10
    o2.tick()
    assert o2.ejected == set()


# -- the health view ----------------------------------------------------------------------


async def test_a_failing_health_check_is_reported_as_such_not_as_outlier_detection() -> None:
    router, _, _ = make_router([cand(0, 1e-6, 5, "west"), cand(1, 2e-6, 5, "east")],
                               {"ep0": b"", "ep1": b""}, Clock())
    router.health.checked("b0", ok=False)
    router.health.checked("b0", ok=False)
    with pytest.raises(NoHealthyDeployment) as err:
        await router.infer(RAW, [("x-allowed-regions", "west")], 2.0, CallRecord("", ""))
    assert CHECK_FAILING in err.value.removed["b0/m-v"]
    assert "outlier" not in err.value.message
    router.health.checked("b0", ok=True)  # passes again: usable at once, through slow start
    assert router.health.view().unusable == {}
    assert router.health.view().warming == {"b0/m-v": pytest.approx(0.1)}


def test_a_calls_health_view_is_a_read_only_snapshot() -> None:
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock,
                               OutlierSettings(consecutive=1))
    held = router.health.view()
    router.health.failure(cand(0, 1e-6, 5), server_failure=False)
    assert held.unusable == {}  # what a call already holds does not change under it
    assert router.health.view().unusable == {"b0/m-v": OUTLIER}
    with pytest.raises(TypeError):
        router.health.view().unusable["b1/m-v"] = "x"  # type: ignore[index]


# -- the caller's own deadline and cancellation ----------------------------------------------


class Timeout(FakeUpstream):
    """Every attempt runs out its timeout (the clock moves by it) and fails."""

    def __init__(self, clock: Clock) -> None:
        super().__init__({})
        self.clock = clock

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((self._endpoint, raw))
        self.clock.t += timeout or 0.0
        raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_the_callers_own_expired_deadline_ejects_nothing() -> None:
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock,
                                  OutlierSettings(consecutive=1))
    router.upstreams = Timeout(clock)  # type: ignore[assignment]
    for _ in range(5):  # 3 ms: an attempt starts, and the caller's deadline ends it
        with pytest.raises(BackendFailed):
            await router.infer(RAW, [("x-slo-ms", "100")], 0.003, CallRecord("", ""))
    assert router.health.view().unusable == {}
    assert router.stats.by_deployment == {}  # not a failure of the backend either
    assert [r.status for r in done] == ["DEADLINE_EXCEEDED"] * 5
    # A timeout well inside a long deadline is the backend's: it is held against it.
    with pytest.raises(BackendFailed):
        await router.infer(RAW, [("x-slo-ms", "100")], 30.0, CallRecord("", ""))
    assert "b0/m-v" in router.health.view().unusable


async def test_a_deadline_too_short_to_start_an_attempt_forwards_nothing() -> None:
    """Under ``MIN_REMAINING_S`` left: stopped at the edge (retries follow the same rule)."""
    clock = Clock()
    router, up, done = make_router([cand(0, 1e-6, 5)], {"ep0": "answers"}, clock)
    with pytest.raises(DeadlineTooShort) as err:
        await router.infer(RAW, [("x-slo-ms", "100")], 0.001, CallRecord("", ""))
    assert up.calls == []
    assert err.value.grpc_code == "DEADLINE_EXCEEDED" and "1.0 ms" in err.value.message
    assert [r.status for r in done] == ["DEADLINE_EXCEEDED"]
    await router.infer(RAW, [("x-slo-ms", "100")], 0.003, CallRecord("", ""))  # 3 ms: sent
    assert len(up.calls) == 1


class Hang(FakeUpstream):
    """Attempts that never answer; ``started`` gets one item per attempt under way."""

    def __init__(self) -> None:
        super().__init__({})
        self.started: asyncio.Queue[str] = asyncio.Queue()

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((self._endpoint, raw))
        self.started.put_nowait(self._endpoint)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize(("remaining_s", "status"), [(30.0, "CANCELLED"),
                                                      (0.5, "DEADLINE_EXCEEDED")])
async def test_a_cancelled_call_is_recorded_with_a_grpc_status_name(
        remaining_s: float, status: str) -> None:
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock,
                                  OutlierSettings(consecutive=1))
    up = Hang()
    router.upstreams = up  # type: ignore[assignment]
    task = asyncio.ensure_future(router.infer(RAW, [], remaining_s, CallRecord("", "")))
    await up.started.get()  # the attempt is under way
    clock.t += 1.0  # past a 0.5 s deadline (grpc cancels the handler then), not a 30 s one
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.status for r in done] == [status]
    assert router.health.view().unusable == {}


async def test_a_hedged_call_cancelled_by_its_caller_leaves_no_task_behind() -> None:
    router, _, _ = make_router([cand(0, 1e-6, 2), cand(1, 2e-6, 2)], {}, Clock(),
                               hedge_max_slo_ms=50)
    up = Hang()
    router.upstreams = up  # type: ignore[assignment]
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(router.infer(RAW, [("x-slo-ms", "30")], 2.0,
                                              CallRecord("", "")))
    await up.started.get()  # the first leg is under way, the hedge timer armed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # One loop turn, no more: a cancelled attempt finishes in it; one that outlived the call
    # would still be here.
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()  # its attempt did not outlive the call
    # The same once both legs run.
    task = asyncio.ensure_future(router.infer(RAW, [("x-slo-ms", "30")], 2.0,
                                              CallRecord("", "")))
    await up.started.get()
    await up.started.get()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # one loop turn, as above
    assert asyncio.all_tasks() - before == set()


# -- trailers -------------------------------------------------------------------------------


async def test_a_backends_own_error_claims_no_cost_and_no_slo() -> None:
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                               {"ep0": grpc.StatusCode.INVALID_ARGUMENT, "ep1": b""}, Clock())
    rec = CallRecord("", "")
    with pytest.raises(BackendFailed):
        await router.infer(RAW, [("x-request-id", "r-1")], 2.0, rec)
    trailers = dict(rec.trailers())
    assert rec.status == "INVALID_ARGUMENT"
    assert trailers == {"x-request-id": "r-1", "x-attempts": "1"}


async def test_a_hint_error_still_echoes_the_request_id() -> None:
    from placement.errors import InvalidHint

    router, _, done = make_router([cand(0, 1e-6, 5)], {"ep0": b""}, Clock())
    rec = CallRecord("", "")
    with pytest.raises(InvalidHint):
        await router.infer(RAW, [("x-request-id", "r-2"), ("x-slo-ms", "-5")], 2.0, rec)
    assert dict(rec.trailers())["x-request-id"] == "r-2"
    assert done[0].status == "INVALID_ARGUMENT"


class _MetadataStub:
    """A backend's ModelMetadata: per endpoint, an error code or an answer."""

    def __init__(self, up: FakeUpstream) -> None:
        self.up = up

    async def ModelMetadata(self, request: object, timeout: float | None = None) -> object:
        from tritonclient.grpc import service_pb2

        ep = self.up._endpoint
        self.up.calls.append((ep, b""))
        b = self.up.behaviour[ep]
        if isinstance(b, grpc.StatusCode):
            raise rpc_error(b)
        return service_pb2.ModelMetadataResponse(name=request.name)  # type: ignore[attr-defined]


class _AbortContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted {code.name}: {details}")


async def test_a_control_rpc_follows_the_attempt_policy_past_a_dead_server() -> None:
    """ModelMetadata forwarded by the edge: UNAVAILABLE from a server rules out its other
    variant too (the attempt policy's rule), so the next try is another server."""
    from tritonclient.grpc import service_pb2

    from services.edge.service import InferenceService

    clock = Clock()
    other_variant = Candidate(
        deployment_id="b0/m-w", backend_id="b0", endpoint="ep0", variant="m-w", region="east",
        cloud="c", accelerator="a", quality=0.8, latency_p95_ms=5, rtt_ms=0, queue_ms=0,
        compute_ms=5, cost_usd=1.5e-6, spare_capacity=100)
    router, up, _ = make_router([cand(0, 1e-6, 5), other_variant, cand(1, 2e-6, 5)],
                                {"ep0": grpc.StatusCode.UNAVAILABLE, "ep1": b""}, clock)
    up.stub = _MetadataStub(up)  # type: ignore[attr-defined]
    svc = InferenceService(router)
    resp = await svc.model_metadata(service_pb2.ModelMetadataRequest(name="m"),
                                    _AbortContext())  # type: ignore[arg-type]
    assert resp.name == "m"  # the logical name, whichever variant answered
    assert [e for e, _ in up.calls] == ["ep0", "ep1"]
