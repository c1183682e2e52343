"""placement.edge_learning: class rates, miss margins and slow-path load from access logs."""

from __future__ import annotations

import math

import pytest

from placement.edge_learning import EdgeLearning
from placement.model import Candidate


def cand(dep: str, compute: float = 40.0) -> Candidate:
    backend, variant = dep.split("/", 1)
    return Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"{backend}:1", variant=variant,
        region="r", cloud="aws", accelerator="t4", quality=0.8, latency_p95_ms=50.0,
        rtt_ms=5.0, queue_ms=0.0, compute_ms=compute, cost_usd=1e-6, spare_capacity=1.0)


CANDS = {"a/v": cand("a/v"), "b/v": cand("b/v", 100.0)}


def test_rates_are_an_average_of_the_calls_between_pushes() -> None:
    e = EdgeLearning(time_constant_s=5.0)
    assert e.learned(0.0, CANDS).rates == {}  # the first push opens the window
    for _ in range(20):
        e.call("k", 300.0)
    got = e.learned(2.0, CANDS).rates["k"]
    assert got == pytest.approx(10.0)  # a class first seen: its first window's rate
    for _ in range(60):
        e.call("k", 300.0)
    # then an average: 30 calls/s for 2 s moves it part of the way
    assert e.learned(4.0, CANDS).rates["k"] == pytest.approx(
        10.0 + (30.0 - 10.0) * (1 - math.exp(-2.0 / 5.0)))
    got = e.learned(4.0, CANDS).rates["k"]
    # nothing more: the rate decays toward 0, it does not stay
    assert e.learned(6.0, CANDS).rates["k"] < got
    # a push at the same instant changes nothing
    assert e.learned(4.0, CANDS).rates["k"] == e.learned(4.0, CANDS).rates["k"]


def test_margins_come_from_late_calls_of_the_class_only() -> None:
    e = EdgeLearning()
    e.learned(0.0, CANDS)
    e.call("tight", 100.0)
    e.call("loose", 1000.0)
    e.served("a/v", 100.0, 150.0, 0.5)  # late
    e.served("a/v", 1000.0, 150.0, 0.5)  # in time
    got = e.learned(1.0, CANDS).margins
    assert got["tight"]["a/v"] > 0
    assert got["loose"] == {}


def test_the_slow_paths_calls_reserve_erlangs_of_their_backend() -> None:
    e = EdgeLearning(time_constant_s=1e-9)  # no averaging: the last window's rate
    e.learned(0.0, CANDS)
    for _ in range(10):
        e.other_path("b/v")
    got = e.learned(1.0, CANDS).reserved
    assert got == {"b": pytest.approx(10 * 0.1)}  # 10 calls/s x 100 ms
    assert e.learned(2.0, CANDS).reserved == {}


def test_the_slow_paths_load_is_averaged_from_zero_not_taken_whole() -> None:
    """A deployment the slow path starts using (a failover) is reserved gradually: its first
    window is averaged from 0, as before (taken whole, single-cloud-hetero fell)."""
    e = EdgeLearning(time_constant_s=5.0)
    e.learned(0.0, CANDS)
    for _ in range(20):
        e.other_path("b/v")
        e.call("k", 300.0)
    got = e.learned(2.0, CANDS)
    assert got.rates["k"] == pytest.approx(10.0)
    assert got.reserved["b"] == pytest.approx(10.0 * (1 - math.exp(-2.0 / 5.0)) * 0.1)
