"""Idle-slot borrowing (``placement.shares.borrow_tail`` / ``borrowed_ms``): the miss budget
an edge has left, and a borrowed slot priced by its queueing risk."""

from __future__ import annotations

import pathlib
import random

import pytest

from benchmarks.costsim.policies import Attempt, ProfilePolicy
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import load_scenario
from placement import queueing, shares
from placement.feedback import SloFeedback
from placement.filters.slo import SloFilter
from placement.model import CallContext, Candidate, Hints
from placement.registry import PROFILES, build_profile
from placement.shares import borrow_tail, borrowed_ms
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb
from services.edge.budget import RetryBudget
from services.edge.health import HealthView
from services.edge.outlier import OutlierSettings
from services.edge.router import CallRecord, Router, RouterSettings
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.edge.wire import encode_name_field


def _row(busy: float, slots: float = 1.0, p95: float = 60.0) -> Candidate:
    """A backend of 8 servers, 20 ms per call, ``busy`` of it in use at the last report."""
    capacity = 8 * 1000 / 20.0
    return Candidate(deployment_id="b1/v", backend_id="b1", endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=1.0, queue_ms=0.0, compute_ms=20.0, cost_usd=1e-6,
                     spare_capacity=capacity * (1.0 - busy), concurrency=8, edge_slots=slots)


def _feedback(calls: int, missed: int) -> SloFeedback:
    fb = SloFeedback()
    for i in range(calls):
        fb.record("b1/v", 200.0, i >= missed, float(i) / 100)
    return fb


def test_the_budget_is_what_the_edges_own_misses_leave(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    clean = _feedback(4000, 0)
    monkeypatch.setattr(shares, "BORROW", False)
    assert borrow_tail(clean) == 0.0  # off: no budget at all
    monkeypatch.setattr(shares, "BORROW", True)
    assert borrow_tail(SloFeedback()) == 0.0  # nothing seen yet
    assert borrow_tail(_feedback(300, 0)) == 0.0  # too few calls to know
    few = borrow_tail(_feedback(4000, 4))
    assert 0.0 < few < borrow_tail(clean) < queueing.TAIL
    assert borrow_tail(_feedback(4000, 30)) == 0.0  # missing as often as the target allows


def test_past_its_share_an_edge_borrows_an_idle_slot_at_its_queueing_risk() -> None:
    ctx = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1}, borrow_tail=0.004)
    idle = _row(busy=0.1)
    worst = ctx.latency_ms(idle)
    assert worst == pytest.approx(60.0 + 8 * 20.0)  # every slot busy ahead of its excess
    assert borrowed_ms(idle, ctx, worst) == pytest.approx(60.0)  # nearly idle: no wait
    # A busier backend: the M/M/c wait at the budget's tail, more for a smaller budget.
    half = _row(busy=0.5)
    loose = borrowed_ms(half, ctx, ctx.latency_ms(half))
    small = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1}, borrow_tail=0.0005)
    tight = borrowed_ms(half, small, small.latency_ms(half))
    assert 60.0 < loose < tight < small.latency_ms(half)
    # Full at the last report: nothing idle to borrow.
    full = _row(busy=1.0)
    assert borrowed_ms(full, ctx, ctx.latency_ms(full)) == ctx.latency_ms(full)


def test_no_budget_within_the_share_or_past_the_bound_keeps_the_prediction() -> None:
    row = _row(busy=0.1)
    none = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 2})
    assert borrowed_ms(row, none, none.latency_ms(row)) == none.latency_ms(row)
    within = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1}, borrow_tail=0.004)
    assert borrowed_ms(_row(0.1, slots=4.0), within, 60.0) == 60.0
    # A share of 1 slot on a backend 10 % busy may be borrowed up to 1.75 slots, no more.
    over = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 2, "b1/w": 1},
                       borrow_tail=0.004)
    assert borrowed_ms(row, over, over.latency_ms(row)) == over.latency_ms(row)


def test_the_slo_filter_lets_a_loose_call_borrow_where_a_tight_one_may_not() -> None:
    f = SloFilter()
    row = _row(busy=0.6, p95=60.0)
    loose = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1}, borrow_tail=0.004)
    tight = CallContext(Hints(slo_ms=70.0), inflight={"b1/v": 1}, borrow_tail=0.004)
    assert loose.latency_ms(row) > 200.0  # without borrowing both are out
    assert f.reject(row, loose) is None
    assert f.reject(row, tight) is not None
    assert f.reject(row, CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1})) is not None


def test_the_simulated_edge_fills_the_budget_from_its_own_misses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_scenario(pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"
                      / "small.toml")
    seen: list[float] = []
    policy = make_policy("switchyard", s, on_decision=lambda c, ctx, d: seen.append(
        ctx.borrow_tail))
    assert isinstance(policy, ProfilePolicy) and policy.control is not None
    policy.control.rebuild(0.0)
    edge = sorted(s.regions)[0]
    klass = s.classes()[0]
    policy.feedback[edge] = _feedback(4000, 2)

    def choose() -> None:
        assert policy.choose(Attempt(edge, klass, frozenset(), frozenset(), 1.0)) is not None

    monkeypatch.setattr(shares, "BORROW", False)
    choose()
    monkeypatch.setattr(shares, "BORROW", True)
    choose()
    assert seen == [0.0, pytest.approx(borrow_tail(policy.feedback[edge]))] and seen[1] > 0


def test_the_edge_router_fills_the_budget_from_its_own_misses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    row = _row(busy=0.1)
    store = RouteStore("r", None)
    store.apply(placement_pb2.RouteUpdate(version=1, snapshot=True, tables=[
        placement_pb2.RouteTable(model="m", edge_region="r", version=1, default_slo_ms=100,
                                 candidates=[candidate_to_pb(row)])]))
    clock = lambda: 1000.0  # noqa: E731 - a fixed clock
    health = HealthView(store, OutlierSettings(), slow_start_s=10.0, clock=clock)
    health.table_changed()
    router = Router(store, None, health, EdgeStats(),  # type: ignore[arg-type]
                    RetryBudget(clock=clock), {n: build_profile(n) for n in PROFILES},
                    frozenset({"r"}), RouterSettings(), lambda r: None, clock=clock,
                    rng=random.Random(0))
    router.feedback = _feedback(4000, 2)
    raw = encode_name_field("m")
    monkeypatch.setattr(shares, "BORROW", False)
    assert router.read(raw, [], None, CallRecord("", ""))[2].borrow_tail == 0.0
    monkeypatch.setattr(shares, "BORROW", True)
    tail = router.read(raw, [], None, CallRecord("", ""))[2].borrow_tail
    assert tail > 0 and tail == pytest.approx(borrow_tail(router.feedback))
