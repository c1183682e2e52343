"""Stream learning at placement (issue 14 step 3): edges' reports → the fleet's token speed and
$ per 1M tokens → route-table rows → a fresh edge's estimates."""

from __future__ import annotations

import math

import pytest

from placement.catalog import Catalog
from placement.fleet import FleetState
from placement.model import Backend, Candidate, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from placement.routes import RouteBuilder
from placement.token_learning import TTL_S, StreamSeen, TokenLearning, TokenSpeed
from services.api.switchyard.v1 import telemetry_pb2
from services.convert import (
    candidate_from_pb,
    candidate_to_pb,
    stream_seen_from_pb,
    stream_seen_to_pb,
)
from services.edge.token_stats import (
    MEASURED_ZERO_PREFILL_MS,
    OWN_MIN_WEIGHT,
    StreamMeter,
    StreamStats,
)

FIT_A = StreamSeen(prefill_ms_per_token=0.25, tpot_base_ms=10.0, tpot_per_stream_ms=1.0,
                   weight=3.0)
FIT_B = StreamSeen(prefill_ms_per_token=0.05, tpot_base_ms=2.0, tpot_per_stream_ms=0.0,
                   weight=1.0)


def test_fleet_speed_is_the_weighted_average_of_fresh_edge_fits() -> None:
    t = TokenLearning()
    assert t.speed("b/llm", 0.0) is None
    assert t.observe("edge-1", "b/llm", FIT_A, 0.0)
    assert t.speed("b/llm", 0.0) == TokenSpeed(0.25, 10.0, 1.0)
    assert t.observe("edge-2", "b/llm", FIT_B, 1.0)
    s = t.speed("b/llm", 1.0)
    assert s is not None
    assert s.tpot_base_ms == pytest.approx((3 * 10.0 + 1 * 2.0) / 4)
    assert s.tpot_per_stream_ms == pytest.approx(0.75)
    assert s.prefill_ms_per_token == pytest.approx((3 * 0.25 + 1 * 0.05) / 4)
    # edge-1's fit goes stale: only edge-2's remains
    assert t.speed("b/llm", TTL_S + 0.5) == TokenSpeed(0.05, 2.0, 0.0)


def test_same_report_again_changes_nothing_and_speed_needs_both_fits() -> None:
    t = TokenLearning()
    assert not t.observe("e", "b/llm", StreamSeen(prefill_ms_per_token=0.2), 0.0)
    assert t.speed("b/llm", 0.0) is None  # prefill without a TPOT line: not yet usable
    assert t.observe("e", "b/llm", FIT_A, 1.0)
    assert not t.observe("e", "b/llm", FIT_A, 2.0)
    # a third-digit wobble is not published (route rows would churn for nothing)
    assert not t.observe("e", "b/llm", StreamSeen(0.2501, 10.03, 1.001, 3.0), 3.0)


def test_cost_per_million_tokens_from_observed_tokens_and_cost() -> None:
    t = TokenLearning()
    t.observe("e", "b/llm", StreamSeen(0.25, 10.0, 1.0, 3.0, attempts=2, tokens_in=1000,
                                       tokens_out=400, input_usd=2e-4, output_usd=1.2e-3), 0.0)
    s = t.speed("b/llm", 0.0)
    assert s is not None
    # $0.0002 over 1000 prompt tokens = $0.20 per 1M; $0.0012 over 400 output tokens = $3
    assert (s.usd_per_1m_input, s.usd_per_1m_output) == (pytest.approx(0.2),
                                                         pytest.approx(3.0))
    t.observe("e2", "b/llm", StreamSeen(attempts=1, tokens_in=1000, tokens_out=100,
                                        input_usd=0.0, output_usd=0.0), 0.0)
    s = t.speed("b/llm", 0.0)
    assert s is not None and s.usd_per_1m_input == pytest.approx(0.1)
    assert s.usd_per_1m_output == pytest.approx(2.4)


def _fleet() -> tuple[FleetState, RouteBuilder]:
    v = Variant("llm", "gen", 0.8)
    catalog = Catalog.build({"east": "aws"}, [LogicalModel("gen", 1000, (v,), True)], [])
    prices = PriceCatalog([PriceEntry("gpu", "aws", "*", "on-demand", 3.6)])
    fleet = FleetState()
    fleet.register(Backend("b1", "h:1", "aws", "east", "gpu", 1, "on-demand", (v,), 4))
    return fleet, RouteBuilder(catalog, prices, fleet)


def test_reports_reach_the_route_rows_and_mark_the_backend_changed() -> None:
    fleet, builder = _fleet()
    (row,) = builder.build("gen", "east", 0.0)
    assert row.tokens is None
    fleet.take_dirty()
    fleet.observe_streams(("east", "e1"), "b1/llm", FIT_A, 0.0)
    assert "b1" in fleet.take_dirty()[1]
    (row,) = builder.build("gen", "east", 0.0)
    assert row.tokens == TokenSpeed(0.25, 10.0, 1.0)
    fleet.observe_streams(("east", "e1"), "b1/llm", FIT_A, 1.0)
    assert fleet.take_dirty()[1] == set()  # nothing new: no rebuild


def test_token_speed_and_stream_report_round_trip_the_wire() -> None:
    _, builder = _fleet()
    (row,) = builder.build("gen", "east", 0.0)
    with_tokens = Candidate(**{f: getattr(row, f) for f in row.__slots__ if f != "tokens"},
                            tokens=TokenSpeed(0.25, 10.0, 1.0, 0.2, 3.0))
    assert candidate_from_pb(candidate_to_pb(with_tokens)).tokens == with_tokens.tokens
    assert candidate_from_pb(candidate_to_pb(row)).tokens is None
    seen = StreamSeen(0.25, 10.0, 1.0, 3.0, 2, 1000, 400, 2e-4, 1.2e-3)
    assert stream_seen_from_pb(stream_seen_to_pb(seen)) == seen
    broken = telemetry_pb2.StreamObservation(prefill_ms_per_token=-1.0, weight=math.nan,
                                             tpot_base_ms=math.inf, tokens_out=5)
    assert stream_seen_from_pb(broken) == StreamSeen(tokens_out=5)


def _cand(tokens: TokenSpeed | None) -> Candidate:
    return Candidate(deployment_id="b/llm", backend_id="b", endpoint="h:1", variant="llm",
                     region="r", cloud="c", accelerator="gpu", quality=0.8, latency_p95_ms=10,
                     rtt_ms=0.0, queue_ms=0, compute_ms=2.0, cost_usd=2e-6, spare_capacity=1,
                     tokens=tokens)


def _segment(stats: StreamStats, c: Candidate, tokens: int, tpot_s: float) -> None:
    """One emulated attempt on ``c``: 100 prompt tokens, 50 ms to first token."""
    m = StreamMeter(0.0, 100, measured=True)
    m.segment(0.0, 0)
    for i in range(tokens):
        m.token(0.05 + i * tpot_s)
    m.segment_ended(c, stats, 100, 0)


def test_fresh_edge_uses_the_fleet_until_it_has_its_own_samples() -> None:
    fleet = TokenSpeed(0.1, 4.0, 0.5)
    c = _cand(fleet)
    stats = StreamStats()
    assert stats.sourced([c])["b/llm"][1] == "fleet"
    est = stats.estimates([c])["b/llm"]
    assert (est.prefill_ms_per_token, est.tpot_base_ms, est.tpot_per_stream_ms) == (0.1, 4.0, 0.5)
    assert stats.estimates([_cand(None)]) == {}
    n = 0
    while stats.sourced([c])["b/llm"][1] == "fleet":
        _segment(stats, c, 11, 0.02)
        n += 1
    assert n == 4 and OWN_MIN_WEIGHT <= 1 + 0.9 + 0.81 + 0.729
    est = stats.estimates([c])["b/llm"]
    assert est.tpot_base_ms == pytest.approx(20.0)
    assert est.prefill_ms_per_token == pytest.approx(0.5)  # 50 ms over 100 tokens


def test_report_carries_the_fit_and_resets_the_window() -> None:
    stats = StreamStats()
    c = _cand(None)
    _segment(stats, c, 11, 0.02)
    _segment(stats, c, 11, 0.02)
    (seen,) = stats.report().values()
    assert (seen.attempts, seen.tokens_in, seen.tokens_out) == (2, 200, 22)
    assert seen.tpot_base_ms == pytest.approx(20.0) and seen.weight == pytest.approx(1.9)
    assert seen.input_usd > 0 and seen.output_usd > 0
    (again,) = stats.report().values()
    assert (again.attempts, again.tokens_out, again.output_usd) == (0, 0, 0.0)
    assert again.tpot_base_ms == seen.tpot_base_ms  # the fit is re-sent (it keeps it fresh)


def test_a_prefill_measured_as_zero_is_reported_as_measured() -> None:
    """The first token came within the row's RTT (a loaded host): the prefill is measured,
    at 0, and the report must not say "not measured" (0 on the wire), or placement never
    publishes the deployment's speed."""
    stats = StreamStats()
    stats.observe("b/llm", prefill_ms=0.0, uncached_tokens=60, tpot_ms=10.0, load=0)
    (seen,) = stats.report().values()
    assert seen.prefill_ms_per_token == MEASURED_ZERO_PREFILL_MS
    learning = TokenLearning()
    learning.observe("edge", "b/llm", seen, 0.0)
    speed = learning.speed("b/llm", 0.0)
    assert speed is not None and speed.prefill_ms_per_token == MEASURED_ZERO_PREFILL_MS
    stats.observe("c/llm", prefill_ms=5.0, uncached_tokens=0, tpot_ms=10.0, load=0)
    assert stats.report()["c/llm"].prefill_ms_per_token == 0.0  # never prefilled: unmeasured
