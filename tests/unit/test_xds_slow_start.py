"""Slow start for Envoy edges (issue 12): a deployment placement sees come back takes a
rising share of its compiled split (``placement.splits`` with ``warming``), its share the
Python edge's linear rule (``placement.filters.slow_start.ramp_share``) read at stepped
compiles (``services.xds.returns``), recompiled by the ADS server at each step."""

from __future__ import annotations

import pytest

from placement.filters.slow_start import MIN_SHARE, ramp_share
from placement.model import Candidate
from placement.registry import build_profile
from placement.splits import RATE_HEADROOM, Demand, max_utilisation, split
from services.api.switchyard.v1 import placement_pb2
from services.edge.slowstart import SlowStart
from services.xds.resources import EnvoySettings, route_config_name
from services.xds.returns import RAMP_STEPS, Returns
from services.xds.routes import rotation_cluster_name
from services.xds.server import AdsServer
from tests.xds_tables import cand as pb_cand

PROFILE = build_profile("cheapest")


def cand(dep: str, cost: float, concurrency: int = 4) -> Candidate:
    backend, variant = dep.split("/", 1)
    return Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"{backend}.test:8001",
        variant=variant, region="r", cloud="aws", accelerator="nvidia-t4", quality=0.8,
        latency_p95_ms=100.0, rtt_ms=5.0, queue_ms=0.0, compute_ms=50.0, cost_usd=cost,
        spare_capacity=100.0, concurrency=concurrency, observed=True)


# -- the rule, written once ----------------------------------------------------------------

def test_the_linear_rule_is_shared_by_the_python_edge() -> None:
    assert ramp_share(0.0, 10.0) == MIN_SHARE
    assert ramp_share(-3.0, 10.0) == MIN_SHARE  # before the return (a step's start)
    assert ramp_share(5.0, 10.0) == pytest.approx(MIN_SHARE + (1 - MIN_SHARE) / 2)
    assert ramp_share(10.0, 10.0) is None and ramp_share(1.0, 0.0) is None
    t = [0.0]
    edge = SlowStart(10.0, clock=lambda: t[0])
    edge.returned("a/v")
    t[0] = 2.5
    edge.tick()
    assert edge.shares["a/v"] == ramp_share(2.5, 10.0)
    t[0] = 10.0
    edge.tick()
    assert "a/v" not in edge.shares


# -- the split ---------------------------------------------------------------------------

def test_a_returning_row_takes_its_share_and_its_excess_goes_to_the_next() -> None:
    """The cheapest row has room for the whole class: warming, it takes its share of it
    and the next row the rest; once the ramp is over, the whole class again."""
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5)
    d = Demand("k", 298.0, 1.0, [a, b])
    assert split([d]) == {"k": {"a/v": 1.0}}
    got = split([d], warming={"a/v": MIN_SHARE})["k"]
    assert got["a/v"] == pytest.approx(MIN_SHARE)
    assert got["b/v"] == pytest.approx(1 - MIN_SHARE)
    later = split([d], warming={"a/v": 0.55})["k"]
    assert later["a/v"] == pytest.approx(0.55)
    assert split([d], warming={}) == {"k": {"a/v": 1.0}}


def test_a_returning_row_past_its_room_takes_its_share_of_what_it_could_carry() -> None:
    """100 calls/s: a (4 slots) carries 80 ρ* of them; warming at 0.5 it is planned with
    half of that, b takes the rest."""
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5, concurrency=32)
    rho = max_utilisation(298.0 - 100.0, 50.0, 4)
    full = 80 * rho / (100 * RATE_HEADROOM)
    got = split([Demand("k", 298.0, 100.0, [a, b])], warming={"a/v": 0.5})["k"]
    assert got["a/v"] == pytest.approx(full / 2)
    assert got["b/v"] == pytest.approx(1 - full / 2)


def test_what_the_next_rows_have_no_room_for_stays_on_the_returning_row() -> None:
    """The ramp moves calls only onto room that meets the SLO: b (one slot) cannot take
    a's held-off calls, so they stay on a rather than spill to the late fallback row f."""
    a, b = cand("a/v", 1e-5, concurrency=32), cand("b/v", 2e-5, concurrency=1)
    late = cand("f/v", 3e-5, concurrency=32)
    d = Demand("k", 298.0, 100.0, [a, b], fallback=[late])
    plain = split([d])["k"]
    got = split([d], warming={"a/v": MIN_SHARE})["k"]
    assert "f/v" not in got and got["a/v"] > 0.5
    assert got["b/v"] > plain.get("b/v", 0.0)  # b took what it had room for


def test_rows_never_unusable_are_untouched() -> None:
    """Classes on rows that did not come back split as they did, alone or beside a class
    whose row ramps (on other backends)."""
    a, b, c, d = (cand(x, cost) for x, cost in
                  (("a/v", 1e-5), ("b/v", 2e-5), ("c/v", 3e-5), ("d/v", 4e-5)))
    other = Demand("o", 298.0, 100.0, [c, d])
    both = [Demand("k", 298.0, 1.0, [a, b]), other]
    assert split([other], warming={"a/v": MIN_SHARE})["o"] == split([other])["o"]
    assert split(both, warming={"a/v": MIN_SHARE})["o"] == split(both)["o"]
    assert split(both, warming={"a/v": MIN_SHARE})["k"] == pytest.approx(
        {"a/v": MIN_SHARE, "b/v": 1 - MIN_SHARE})


def test_the_only_row_keeps_the_class() -> None:
    """Nowhere else to go: a warming row alone in its class still takes it all (overload
    spread by room, its own share of one)."""
    a = cand("a/v", 1e-5)
    assert split([Demand("k", 298.0, 1.0, [a])], warming={"a/v": MIN_SHARE}) == {
        "k": {"a/v": 1.0}}


# -- when placement saw it come back -----------------------------------------------------

def _rows(*rows: tuple[str, str]) -> list[tuple[str, list[placement_pb2.Candidate]]]:
    return [("m", [placement_pb2.Candidate(deployment_id=d, dropped_reason=why)
                   for d, why in rows])]


def test_returns_ramp_a_deployment_back_from_a_drain_in_steps() -> None:
    r = Returns(8.0)  # steps of 2 s
    r.observe("east", _rows(("a/v", "backend drained by operator"), ("b/v", "")), 100.0)
    assert r.shares("east", 100.0) == {} and not r.due("east", 100.0)  # a first look: none
    r.observe("east", _rows(("a/v", ""), ("b/v", "")), 101.0)
    assert r.shares("east", 101.0) == {"a/v": MIN_SHARE} and r.returned == 1
    assert not r.due("east", 101.9) and r.wait_s("east", 101.0) == pytest.approx(1.0)
    assert r.due("east", 102.0)
    seen = []
    t = 102.0
    while r.due("east", t) or t < 112:
        if r.due("east", t):
            seen.append(r.shares("east", t).get("a/v"))
        t += 0.25
    # one share per 2 s step, the linear rule at each step's start, then full (None)
    assert seen == [ramp_share(x - 101.0, 8.0) for x in (102.0, 104.0, 106.0, 108.0)] + [None]
    assert len(seen) <= RAMP_STEPS + 1
    assert r.wait_s("east", t) is None


def test_returns_count_a_new_row_of_a_known_model_not_a_new_model_or_a_first_look() -> None:
    r = Returns(8.0)
    r.observe("east", _rows(("a/v", "")), 0.0)
    r.observe("east", _rows(("a/v", ""), ("b/v", "")), 1.0)  # joins model m: ramps
    r.observe("east", [*_rows(("a/v", ""), ("b/v", "")),
                       ("n", [placement_pb2.Candidate(deployment_id="c/w")])], 1.5)
    assert set(r.shares("east", 1.5)) == {"b/v"}  # model n is new: nothing to ramp from
    r.observe("west", _rows(("a/v", ""), ("b/v", "")), 2.0)  # west's first look
    assert r.shares("west", 2.0) == {}


def test_a_deployment_unusable_again_stops_ramping_and_ramps_from_its_next_return() -> None:
    r = Returns(8.0)
    r.observe("east", _rows(("a/v", "not ready"), ("b/v", "")), 0.0)
    r.observe("east", _rows(("a/v", ""), ("b/v", "")), 1.0)
    r.observe("east", _rows(("a/v", "not ready"), ("b/v", "")), 5.0)
    assert r.shares("east", 5.0) == {} and not r.due("east", 7.0)
    r.observe("east", _rows(("a/v", ""), ("b/v", "")), 9.0)
    assert r.shares("east", 9.0) == {"a/v": MIN_SHARE}


def test_off_without_a_ramp() -> None:
    r = Returns(0.0)
    r.observe("east", _rows(("a/v", "drained"), ("b/v", "")), 0.0)
    r.observe("east", _rows(("a/v", ""), ("b/v", "")), 1.0)
    assert r.shares("east", 1.0) == {} and not r.due("east", 5.0)


# -- the ADS server: stepped recompiles of what Envoy gets -------------------------------

class _Hub:
    """What the ADS server reads of ``RouteHub``: one model, small/s (cheapest) drainable."""

    def __init__(self) -> None:
        self.version = 1
        self.drained = True

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        small = pb_cand("small/s", 1e-6, 80, 4)
        if self.drained:
            small.dropped_reason = "backend drained by operator"
        return [placement_pb2.RouteTable(model="summarize", edge_region=region,
                                         default_slo_ms=300,
                                         candidates=[small, pb_cand("big/s", 2e-6, 60, 8)])]


def _weights(ads: AdsServer, region: str) -> dict[str, int]:
    rc = ads.region_config(region)
    routes = rc.routes[route_config_name(region)].message.virtual_hosts[0].routes  # type: ignore[attr-defined]
    r = next(x for x in routes if x.name == "summarize").route
    return {c.name: c.weight.value for c in r.weighted_clusters.clusters}


def test_the_server_recompiles_an_undrained_deployment_at_each_step_of_its_ramp() -> None:
    """Drained, then undrained: the region's route sends small/s 10 % of the class (the
    rest to big/s), rising at each 2 s step, the whole class after 8 s; a recompile per
    step only (``relearn_due``), none between."""
    hub = _Hub()
    ads = AdsServer(hub, PROFILE, EnvoySettings(slow_start_s=8.0))  # type: ignore[arg-type]
    t = [100.0]
    ads.learning.clock = lambda: t[0]
    assert _weights(ads, "r-east") == {}  # small/s drained: big/s alone
    hub.version, hub.drained, t[0] = 2, False, 101.0
    small = rotation_cluster_name("summarize", None, "small/s")
    big = rotation_cluster_name("summarize", None, "big/s")
    assert _weights(ads, "r-east") == {small: 100, big: 900}
    compiles = ads.compiles
    shares = []
    while t[0] < 115.0:
        t[0] += 0.25
        if ads.relearn_due("r-east"):
            w = _weights(ads, "r-east")
            shares.append(w.get(small, 0) / sum(w.values()) if w else 1.0)
        else:
            assert ads.region_config("r-east") is ads.region_config("r-east")
    assert ads.compiles - compiles == len(shares) <= RAMP_STEPS + 1
    assert shares == sorted(shares) and shares[-1] == 1.0 and shares[0] < 0.5
    assert ads.relearn_wait_s("r-east") == ads.learn_every_s  # nothing ramps any more


def test_the_server_ramps_nothing_with_slow_start_off() -> None:
    hub = _Hub()
    ads = AdsServer(hub, PROFILE, EnvoySettings())  # type: ignore[arg-type]
    assert _weights(ads, "r-east") == {}
    hub.version, hub.drained = 2, False
    assert _weights(ads, "r-east") == {} and ads.region_config("r-east").orders[
        "summarize"][0] == "small/s"
