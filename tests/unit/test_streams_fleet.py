"""The fleet's view of prefill queues in the stream choice (placement/streams.py): what the
agents reported of a deployment's queue, less this edge's own share of it, waits before the
stream; nothing reported, nothing added; the edge's own streams are never counted twice."""

from __future__ import annotations

import pytest

from placement.errors import ConfigError
from placement.stream_guard import PendingLog, fleet_queues
from placement.streams import (
    FleetQueue,
    StreamAsk,
    choose_stream,
    explain,
    fleet_loads,
)
from tests.stream_cases import FAST, SLOW, cand

CANDS = [cand("fast"), cand("slow")]
EST = {"fast/llm": FAST, "slow/llm": SLOW}
# slow alone: 1 + 100 × 1.0 = 101 ms ≤ 500 × (1 − 0.5) = 250 ms: the cheap one is feasible
ASK = StreamAsk(prompt_tokens=100, max_tokens=10, ttft_ms=500.0)


def test_the_other_edges_part_is_the_report_less_this_edges_share_never_negative() -> None:
    assert FleetQueue(waiting_tokens=900, own_tokens=300).others_tokens == 600
    assert FleetQueue(waiting_tokens=100, own_tokens=300).others_tokens == 0
    assert FleetQueue(5, 0, streams=7, own_streams=2).others_streams == 5
    assert FleetQueue(5, 0, streams=1, own_streams=2).others_streams == 0


def test_other_edges_queue_moves_a_stream_off_a_deployment_it_cannot_see_queued() -> None:
    assert choose_stream(CANDS, EST, {}, ASK).candidate.backend_id == "slow"
    # 150 tokens of other edges' prefills: 1 + (150 + 100) × 1.0 = 251 ms > 250 ms
    queued = choose_stream(CANDS, EST, {}, ASK, fleet={"slow/llm": FleetQueue(150)})
    assert queued.candidate.backend_id == "fast"
    slow = next(o for o in queued.options if o.candidate.backend_id == "slow")
    assert slow.ttft_ms == pytest.approx(251.0) and slow.others_tokens == 150
    assert not slow.feasible
    # one token fewer and it fits
    assert choose_stream(CANDS, EST, {}, ASK, fleet={"slow/llm": FleetQueue(149)}
                         ).candidate.backend_id == "slow"


def test_this_edges_own_pending_in_the_report_is_not_counted_twice() -> None:
    # this edge has 140 tokens pending on slow; the report (sampled when they were already
    # there) holds them plus 9 of another edge's: 1 + (140 + 9 + 100) = 250 ms, feasible
    mine = {"slow/llm": 140}
    choice = choose_stream(CANDS, EST, {}, ASK, pending=mine,
                           fleet={"slow/llm": FleetQueue(149, own_tokens=140)})
    assert choice.candidate.backend_id == "slow"
    assert choice.chosen.ttft_ms == pytest.approx(250.0) and choice.chosen.others_tokens == 9
    # counting the report whole on top of its own pending would have moved it
    double = choose_stream(CANDS, EST, {}, ASK, pending=mine,
                           fleet={"slow/llm": FleetQueue(149)})
    assert double.candidate.backend_id == "fast"


def test_a_report_for_one_deployment_leaves_the_others_alone() -> None:
    choice = choose_stream(CANDS, EST, {}, ASK, fleet={"fast/llm": FleetQueue(10_000)})
    assert choice.candidate.backend_id == "slow" and choice.chosen.others_tokens == 0
    assert choice.chosen.ttft_ms == pytest.approx(101.0)


def test_fleet_load_puts_other_edges_streams_in_the_batch_but_not_in_the_load_bound() -> None:
    loads = {"slow/llm": 2}
    fleet = {"slow/llm": FleetQueue(0, 0, streams=6, own_streams=1)}
    assert fleet_loads(loads, fleet) == {"slow/llm": 7}
    tpot = StreamAsk(prompt_tokens=10, max_tokens=10, tpot_ms=90.0)
    # own view: 40 + 8 × 2 = 56 ms ≤ 90; with the 5 other streams: 40 + 8 × 7 = 96 ms > 90
    assert choose_stream(CANDS, EST, loads, tpot, fleet=fleet).candidate.backend_id == "slow"
    moved = choose_stream(CANDS, EST, loads, tpot, fleet=fleet, fleet_load=True)
    assert moved.candidate.backend_id == "fast"
    slow = next(o for o in moved.options if o.candidate.backend_id == "slow")
    assert slow.tpot_ms == pytest.approx(96.0) and slow.load == 2


def test_explain_names_the_other_edges_queue() -> None:
    choice = choose_stream(CANDS, EST, {}, ASK, fleet={"slow/llm": FleetQueue(150)})
    lines = explain(choice)
    assert any("slow/llm" in line and "other edges' queue 150 tokens" in line
               for line in lines)
    assert not any("fast/llm" in line and "other edges' queue" in line for line in lines)


def test_the_pending_log_answers_the_state_at_a_past_time() -> None:
    log = PendingLog(max_age_s=10.0)
    assert log.at(5.0) == {}
    log.record(1.0, {"a": 100})
    log.record(2.0, {"a": 100, "b": 50})
    log.record(2.0, {"a": 60, "b": 50})  # a second change at the same time replaces it
    log.record(4.0, {"a": 0})
    assert log.at(0.5) == {} and log.at(1.0) == {"a": 100} and log.at(1.9) == {"a": 100}
    assert log.at(3.0) == {"a": 60, "b": 50} and log.at(9.0) == {"a": 0}
    with pytest.raises(ValueError, match="time went back"):
        log.record(3.0, {})
    with pytest.raises(ConfigError):
        PendingLog(max_age_s=0.0)


def test_the_pending_log_forgets_past_its_horizon_but_keeps_the_state_then() -> None:
    log = PendingLog(max_age_s=10.0)
    log.record(0.0, {"a": 1})
    log.record(5.0, {"a": 2})
    log.record(30.0, {"a": 3})
    assert log.at(25.0) == {"a": 2}  # the state that held until 30 s is still known
    assert log.at(1.0) == {}  # older than the horizon: forgotten


def test_fleet_queues_take_this_edges_share_at_each_reports_sample_time() -> None:
    log = PendingLog()
    log.record(10.0, {"a/llm": 300})
    log.record(11.0, {"a/llm": 500, "b/llm": 40})
    queues = fleet_queues({"a/llm": (800, 1.5), "b/llm": (40, 0.5)}, log, now_s=12.0)
    assert queues["a/llm"] == FleetQueue(800, own_tokens=300)  # sampled at 10.5 s
    assert queues["b/llm"] == FleetQueue(40, own_tokens=40)  # sampled at 11.5 s
    assert queues["a/llm"].others_tokens == 500 and queues["b/llm"].others_tokens == 0
