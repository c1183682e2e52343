"""Placement's reason-labelled counters have every series from the start, at 0: a reason's
first publish (or refusal) adds no series, so a scrape before and after a hostile caller's
calls sees the same set (test_metrics_truth's check), and `rate()` has a zero to start from."""

from __future__ import annotations

from prometheus_client import generate_latest

from services.placement import bands, plausible
from services.placement.metrics import PlacementMetrics


def series(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{reason="):
            label, value = line[len(name) + len('{reason="'):].split('"} ')
            out[label] = float(value)
    return out


def test_every_reason_is_a_series_at_zero_before_anything_happened() -> None:
    text = generate_latest(PlacementMetrics().registry).decode()
    publishes = series(text, "switchyard_placement_route_publishes_total")
    refused = series(text, "switchyard_placement_telemetry_refused_total")
    assert publishes == dict.fromkeys(bands.REASONS, 0.0)
    assert {"added", "removed", "spare_crossed_zero", "queue_ms", "edge_slots"} <= set(publishes)
    assert refused == dict.fromkeys(plausible.REASONS, 0.0)
