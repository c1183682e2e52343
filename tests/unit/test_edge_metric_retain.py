"""An edge's call series leave with their deployment (review10, finding 14).

``switchyard_edge_calls_total`` is labelled by deployment; its children were never removed,
and the capacity loop names every GPU it starts anew (``<pool>-<serial>``, the serial ever
increasing), so an edge running beside the loop kept a series per instance it ever called,
per status. Each new route table now keeps only its deployments' series
(``AccessLog.retain``, run by the edge on every table: ``services.edge.main``)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.edge.accesslog import AccessLog
from services.edge.router import CallRecord
from tests.unit.test_edge_resilience import cand


def _series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(s.labels["deployment"], s.labels["status"]): s.value
            for m in registry.collect() if m.name == "calls" for s in m.samples
            if s.name == "calls_total"}


def _log() -> tuple[AccessLog, CollectorRegistry]:
    registry = CollectorRegistry()
    log = AccessLog(Counter("calls", "", ["model", "deployment", "status"], registry=registry),
                    Histogram("latency", "", ["model"], registry=registry),
                    Counter("attempts", "", ["model"], registry=registry),
                    enabled=False, known_model=lambda m: m == "m")
    return log, registry


def _call(log: AccessLog, deployment: str, status: str = "OK") -> None:
    chosen = dataclasses.replace(cand(0, 1e-6, 5), deployment_id=deployment,
                                 backend_id=deployment.split("/", maxsplit=1)[0])
    log.done(CallRecord("r", "m", chosen=chosen, status=status))


def test_the_series_of_deployments_gone_from_the_table_leave_it() -> None:
    log, registry = _log()
    for serial in range(1, 501):  # instance east-<serial> is routed, serves, leaves
        _call(log, f"east-{serial}/m-v")
        _call(log, f"east-{serial}/m-v", "UNAVAILABLE")
        log.retain({f"east-{serial}/m-v"})
    assert _series(registry) == {("east-500/m-v", "OK"): 1.0,
                                 ("east-500/m-v", "UNAVAILABLE"): 1.0}


def test_a_deployment_still_routed_keeps_counting_and_one_back_starts_again() -> None:
    log, registry = _log()
    for _ in range(3):
        _call(log, "a/m-v")
    _call(log, "b/m-v")
    log.retain({"a/m-v", "b/m-v"})
    assert _series(registry) == {("a/m-v", "OK"): 3.0, ("b/m-v", "OK"): 1.0}
    log.retain({"a/m-v"})
    _call(log, "a/m-v")
    assert _series(registry) == {("a/m-v", "OK"): 4.0}
    _call(log, "b/m-v")  # back in a later table: a new series from 0 (a counter reset)
    assert _series(registry) == {("a/m-v", "OK"): 4.0, ("b/m-v", "OK"): 1.0}


def test_calls_that_reached_no_deployment_are_kept() -> None:
    """A call refused before routing has deployment "" and is no deployment's series."""
    log, registry = _log()
    log.done(CallRecord("r", "m", status="INVALID_ARGUMENT"))
    log.retain(set())
    assert _series(registry) == {("", "INVALID_ARGUMENT"): 1.0}
