"""The demo's two runs price a deployment's calls alike (``services.demo.priced_alike``)."""

from __future__ import annotations

import pytest

from services.demo import Outcome, priced_alike


def _call(deployment: str, cost: float, ok: bool = True) -> Outcome:
    return Outcome("edge-a", 40.0, deployment, 10.0, cost, ok, "OK" if ok else "UNAVAILABLE")


def test_a_deployment_is_priced_at_its_mean_over_both_runs() -> None:
    runs = {"switchyard": [_call("h100", 0.04), _call("l4", 0.01)],
            "fastest": [_call("h100", 0.02), _call("h100", 0.03)]}
    got = priced_alike(runs)
    assert [o.cost_usd for o in got["switchyard"]] == pytest.approx([0.03, 0.01])
    assert [o.cost_usd for o in got["fastest"]] == pytest.approx([0.03, 0.03])
    # where each call went, and everything else about it, is what the run measured
    assert [(o.deployment, o.latency_ms, o.ok) for o in got["fastest"]] == [
        ("h100", 10.0, True), ("h100", 10.0, True)]


def test_a_failed_call_stays_unpriced_and_does_not_move_the_mean() -> None:
    runs = {"switchyard": [_call("-", 0.0, ok=False), _call("h100", 0.02)],
            "fastest": [_call("h100", 0.04)]}
    got = priced_alike(runs)
    assert got["switchyard"][0].cost_usd == 0.0 and not got["switchyard"][0].ok
    assert got["switchyard"][1].cost_usd == pytest.approx(0.03)
    assert got["fastest"][0].cost_usd == pytest.approx(0.03)


def test_met_counts_served_calls_within_their_slo_over_all_calls() -> None:
    from services.demo import met

    late = Outcome("edge-a", 40.0, "h100", 41.0, 0.01, True)
    assert met([_call("h100", 0.01), late, _call("-", 0.0, ok=False), _call("l4", 0.0)]) == 50.0
    assert met([]) == 0.0
