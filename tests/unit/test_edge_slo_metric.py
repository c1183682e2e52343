"""``switchyard_edge_slo_calls_total{model,met}``: each routed call counted once by whether it
met its own SLO, through the edge's real metric objects and access log."""

from __future__ import annotations

import json
import pathlib

from placement.model import Hints
from services.edge.accesslog import AccessLog
from services.edge.main import EdgeMetrics
from services.edge.router import CallRecord

DASHBOARD = (pathlib.Path(__file__).resolve().parents[2] / "helm" / "switchyard" / "dashboards"
             / "switchyard.json")


def slo_counts(m: EdgeMetrics) -> dict[tuple[str, str], float]:
    return {(s.labels["model"], s.labels["met"]): s.value
            for fam in m.registry.collect() if fam.name == "switchyard_edge_slo_calls"
            for s in fam.samples if s.name == "switchyard_edge_slo_calls_total"}


HINTS = Hints(slo_ms=100.0)


def record(model: str, status: str = "OK", slo_met: bool = True,
           hints: Hints | None = HINTS) -> CallRecord:
    return CallRecord("r", model, hints=hints, status=status, slo_met=slo_met, attempts=1)


def test_each_call_with_an_slo_is_counted_once_as_met_or_missed() -> None:
    m = EdgeMetrics()
    log = AccessLog(m.calls, m.latency, m.attempts, enabled=False,
                    known_model=lambda name: name == "summarize", slo_calls=m.slo_calls)
    log.done(record("summarize"))                                    # answered within it
    log.done(record("summarize"))
    log.done(record("summarize", slo_met=False))                     # answered, too slow
    log.done(record("summarize", status="UNAVAILABLE"))              # failed: missed
    log.done(record("summarize", status="CANCELLED", slo_met=True))  # failed: missed
    log.done(record("summarize", status="RESOURCE_EXHAUSTED", hints=None))  # never routed
    log.done(record("caller-chosen-name"))                           # bounded label
    assert slo_counts(m) == {("summarize", "true"): 2.0, ("summarize", "false"): 3.0,
                             ("unknown", "true"): 1.0, ("unknown", "false"): 0.0}


def test_the_slo_panel_reads_the_attainment_of_each_calls_own_slo() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels if p["title"].startswith("SLO attainment")
             for t in p["targets"]]
    assert any('switchyard_edge_slo_calls_total{model=~"$model", met="true"}' in e
               for e in exprs), exprs
