"""Panic routing: when outlier detection has ejected every deployment a call may use, the
call is tried on the ejected one that returns soonest, never past the call's own hints and
never on a deployment failing its health check. The pure decision (``placement.panic``) and
the edge's router with fake upstreams and an injected clock."""

from __future__ import annotations

import random

import grpc
import pytest

from placement.errors import NoHealthyDeployment, PolicyUnsatisfiable
from placement.model import CallContext, Candidate, Hints
from placement.panic import panic_choice, panic_order
from placement.registry import build_profile
from services.edge.health import CHECK_FAILING, OUTLIER
from services.edge.outlier import OutlierSettings
from services.edge.router import CallRecord
from services.edge.stream import route_stream
from tests.unit.test_deadline_rule import Context, Streams, requests
from tests.unit.test_edge_resilience import RAW, Clock, cand, make_router


def dep(i: int, quality: float, cost: float, region: str = "east") -> Candidate:
    return Candidate(deployment_id=f"b{i}/m-v", backend_id=f"b{i}", endpoint=f"ep{i}",
                     variant="m-v", region=region, cloud="c", accelerator="a", quality=quality,
                     latency_p95_ms=5, rtt_ms=0, queue_ms=0, compute_ms=5, cost_usd=cost,
                     spare_capacity=100)


CANDS = [dep(0, 0.9, 1e-6), dep(1, 0.7, 2e-6), dep(2, 0.9, 3e-6, "west"), dep(3, 0.9, 4e-6)]
PROFILE = build_profile("cheapest")


def choose(ctx: CallContext):  # type: ignore[no-untyped-def]
    return PROFILE.choose(CANDS, ctx, random.Random(0), cost_sorted=True)


def ctx(hints: Hints, unusable: dict[str, str], exclude: frozenset[str] = frozenset()
        ) -> CallContext:
    return CallContext(hints, exclude=exclude, unusable=unusable)


ALL_EJECTED = {c.deployment_id: OUTLIER for c in CANDS}


def test_panic_order_is_soonest_back_first() -> None:
    assert panic_order({"b": 5.0, "a": 5.0, "c": 1.0}) == ("c", "a", "b")
    assert panic_order({}) == ()


def test_nothing_usable_is_refused_today_and_panic_picks_the_soonest_back() -> None:
    c = ctx(Hints(slo_ms=100), ALL_EJECTED)
    with pytest.raises(NoHealthyDeployment):
        choose(c)
    until = {"b0/m-v": 9.0, "b1/m-v": 3.0, "b2/m-v": 7.0, "b3/m-v": 8.0}
    got = panic_choice(CANDS, c, until, choose)
    assert got is not None and got.candidate.deployment_id == "b1/m-v"


def test_panic_never_weakens_a_hint() -> None:
    until = {"b0/m-v": 9.0, "b1/m-v": 3.0, "b2/m-v": 4.0, "b3/m-v": 8.0}
    # b1 returns first but is below the quality floor; b2 is outside the allowed regions.
    strict = ctx(Hints(slo_ms=100, min_quality=0.85, allowed_regions=frozenset({"east"})),
                 ALL_EJECTED)
    got = panic_choice(CANDS, strict, until, choose)
    assert got is not None and got.candidate.deployment_id == "b3/m-v"
    # A cost cap that leaves only b0.
    capped = ctx(Hints(slo_ms=100, max_cost_usd=1.5e-6), ALL_EJECTED)
    got = panic_choice(CANDS, capped, until, choose)
    assert got is not None and got.candidate.deployment_id == "b0/m-v"
    # Nothing ejected meets the floor: no panic target, and the call stays refused.
    floor = ctx(Hints(slo_ms=100, min_quality=0.95), ALL_EJECTED)
    assert panic_choice(CANDS, floor, until, choose) is None
    with pytest.raises(PolicyUnsatisfiable):
        choose(floor)


def test_only_outlier_ejections_are_panic_targets() -> None:
    # b0 fails its health check (not in ejected_until); b1 was ruled out by this call's own
    # failed attempt; b2, b3 are not ejected at all but out of the call's regions.
    unusable = {"b0/m-v": CHECK_FAILING, "b1/m-v": OUTLIER}
    c = ctx(Hints(slo_ms=100, allowed_regions=frozenset({"east"})), unusable,
            exclude=frozenset({"b1/m-v", "b3/m-v"}))
    assert panic_choice(CANDS, c, {"b1/m-v": 1.0}, choose) is None
    # Deployments unknown to the table or not unusable are skipped, not chosen.
    assert panic_choice(CANDS, c, {"zz/m-v": 0.0, "b3/m-v": 0.5}, choose) is None


async def test_the_router_tries_an_ejected_deployment_rather_than_refuse() -> None:
    clock = Clock()
    b0, b1 = cand(0, 1e-6, 5), cand(1, 2e-6, 5)
    router, up, done = make_router([b0, b1], {"ep0": b"", "ep1": b""}, clock,
                                   OutlierSettings(consecutive=1, max_share=1.0))
    router.health.failure(b1, server_failure=True)  # ejected first: back first
    clock.t += 1.0
    router.health.failure(b0, server_failure=True)
    assert set(router.health.view().unusable) == {"b0/m-v", "b1/m-v"}
    rec = CallRecord("", "")
    # The cheaper b0 is not the panic target: b1's ejection ends a second sooner.
    assert await router.infer(RAW, [("x-slo-ms", "100")], 30.0, rec) == b"ep1"
    assert rec.status == "OK" and router.panics == 1
    assert [e for e, _ in up.calls] == ["ep1"]
    # A panic attempt that fails is retried on the other ejected deployment.
    up.behaviour["ep1"] = grpc.StatusCode.UNAVAILABLE
    up.calls.clear()
    assert await router.infer(RAW, [("x-slo-ms", "100")], 30.0, CallRecord("", "")) == b"ep0"
    assert [e for e, _ in up.calls] == ["ep1", "ep0"]
    assert [r.status for r in done] == ["OK", "OK"]


async def test_the_router_never_panics_onto_a_failing_health_check() -> None:
    clock = Clock()
    router, up, _ = make_router([cand(0, 1e-6, 5)], {"ep0": b""}, clock)
    router.health.checked("b0", ok=False, detail="connection refused")
    router.health.checked("b0", ok=False, detail="connection refused")
    with pytest.raises(NoHealthyDeployment):
        await router.infer(RAW, [("x-slo-ms", "100")], 30.0, CallRecord("", ""))
    assert up.calls == [] and router.panics == 0


async def test_a_stream_follows_the_same_panic_rule() -> None:
    """Every deployment ejected: the stream is sent to the soonest back (the fake upstream
    refuses to open it, which is how the test sees where it went), not refused."""
    clock = Clock()
    b0, b1 = cand(0, 1e-6, 5), cand(1, 2e-6, 5)
    router, _, _ = make_router([b0, b1], {}, clock, OutlierSettings(consecutive=1, max_share=1.0))
    up = Streams({})
    router.upstreams = up  # type: ignore[assignment]
    router.health.failure(b1, server_failure=True)
    clock.t += 1.0
    router.health.failure(b0, server_failure=True)
    with pytest.raises(AssertionError, match="forwarded"):
        async for _ in route_stream(router, requests(clock, 0.0), [("x-slo-ms", "100")], 30.0,
                                    CallRecord("", ""), Context()):  # type: ignore[arg-type]
            pass
    assert up.calls == [("ep1", b"stream")] and router.panics == 1
