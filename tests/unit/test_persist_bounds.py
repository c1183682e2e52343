"""What placement keeps of edges' reports stays bounded: a stored sample count over what
``ReportObservations`` accepts is not restored, and edge ids silent for
``OBSERVATION_TTL_S`` leave ``FleetState.edges_seen`` (a peer cycling edge ids cannot grow it)."""

from __future__ import annotations

from placement.fleet import OBSERVATION_TTL_S, FleetState
from services.placement import persist
from services.placement.validate import MAX_SAMPLES


def _restored(samples: int) -> FleetState:
    fleet = FleetState()
    fleet.observe("us-east", "b1/summarize-small", 10, 120.0, now=100.0)
    data = persist.dump(fleet, now=100.0, wall=1_000.0)
    data["observed"] = [[r, d, samples, p95, age] for r, d, _, p95, age in data["observed"]]
    fresh = FleetState()
    persist.restore(fresh, data, now=50.0, wall=1_000.0)
    return fresh


def test_a_stored_sample_count_within_the_reports_limit_is_restored() -> None:
    fresh = _restored(MAX_SAMPLES)
    assert fresh.observed[("us-east", "b1/summarize-small")].samples == MAX_SAMPLES


def test_a_stored_sample_count_over_the_reports_limit_is_not_restored() -> None:
    assert _restored(MAX_SAMPLES + 1).observed == {}
    assert _restored(10**12).observed == {}


def test_edge_ids_silent_past_the_ttl_are_forgotten() -> None:
    fleet = FleetState()
    for i in range(1_000):
        fleet.observe_use("us-east", f"edge-{i}", "b1/summarize-small", 1.0, now=0.0)
    fleet.observe_use("us-east", "edge-live", "b1/summarize-small", 1.0, now=OBSERVATION_TTL_S)
    fleet.slot_share("us-east", "b1/summarize-small", now=OBSERVATION_TTL_S + 1.0)
    assert set(fleet.edges_seen) == {("us-east", "edge-live")}
