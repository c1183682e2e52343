"""The cost simulator runs the edge's slow start (``benchmarks.costsim.policies.Warming``):
a row back from dropped in a table ramps by ``ramp_share``, the Python edge's rule."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from benchmarks.costsim import policies
from benchmarks.costsim.engine import Simulation
from benchmarks.costsim.policies import Warming
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate
from placement.filters.slow_start import MIN_SHARE, ramp_share
from tests.meet_rows import meet_row

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"


def test_a_row_back_from_dropped_ramps_as_the_edge_does() -> None:
    up = meet_row("a/v", "a", compute=20.0, slots=2.0)
    other = meet_row("b/v", "b", compute=20.0, slots=2.0)
    down = dataclasses.replace(up, dropped_reason="Triton server not ready")
    w = Warming(10.0)
    w.seen("m", [up, other], 0.0)  # the first table: nothing came back
    assert w.shares(0.0) == {}
    w.seen("m", [down, other], 5.0)
    assert w.shares(5.0) == {}
    w.seen("m", [up, other], 20.0)  # back: ramps from 20 s
    assert w.shares(20.0) == {"a/v": pytest.approx(MIN_SHARE)}
    assert w.shares(25.0)["a/v"] == pytest.approx(ramp_share(5.0, 10.0))
    assert w.shares(30.0) == {}  # the ramp is over


def test_no_ramp_when_off() -> None:
    up = meet_row("a/v", "a", compute=20.0, slots=2.0)
    down = dataclasses.replace(up, dropped_reason="Triton server not ready")
    w = Warming(0.0)
    w.seen("m", [down], 0.0)
    w.seen("m", [up], 1.0)
    assert w.shares(1.0) == {}


def test_the_simulated_edges_ramp_the_pools_back_after_an_outage() -> None:
    """On the small scenario (one region's pools down for a while) the calls after the
    outage see those pools, and only those, warming at shares below 1; with ``SLOW_START``
    off, no call sees any (the simulator before it)."""
    s = load_scenario(SCENARIOS / "small.toml")
    trace = generate(s, quick=True)

    def warming_seen(on: bool) -> list[dict[str, float]]:
        seen: list[dict[str, float]] = []
        policy = make_policy("switchyard", s,
                             on_decision=lambda _c, ctx, _d: seen.append(dict(ctx.warming)))
        old = policies.SLOW_START
        policies.SLOW_START = on
        try:
            Simulation(s, trace, policy).run()
        finally:
            policies.SLOW_START = old
        return seen

    ramps = [w for w in warming_seen(True) if w]
    assert ramps
    assert {dep.split(".", 1)[0] for w in ramps for dep in w} == {s.outages[0].region}
    assert all(MIN_SHARE <= share < 1.0 for w in ramps for share in w.values())
    assert not any(warming_seen(False))
