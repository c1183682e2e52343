"""Telemetry ingest at fleet scale (issue 15): a report whose GPU readings are byte-identical
to the backend's previous report reuses their conversion and hardware verdict, and what
that skips never changes a verdict: holds still expire, a changed reading is read anew."""

from __future__ import annotations

from placement.fleet import FleetState
from placement.hardware import XID_HOLD_S
from placement.model import Backend, Variant
from services.api.switchyard.v1 import telemetry_pb2
from services.placement.ingest import Taken, TelemetryIngest

BACKEND = "be-1"


def _ingest() -> TelemetryIngest:
    fleet = FleetState()
    fleet.register(Backend(id=BACKEND, endpoint="h:1", cloud="aws", region="r-east",
                           accelerator="gpu-cheap", accelerator_count=1,
                           price_class="on-demand",
                           variants=(Variant("summarize-small", "summarize", 0.7),)))
    return TelemetryIngest(fleet, stale_after_s=1e9)


def _report(second: int, calls_per_s: int = 20, mem_free_gb: int = 16,
            xids: tuple[int, ...] = ()) -> telemetry_pb2.TelemetryReport:
    n = calls_per_s * second
    return telemetry_pb2.TelemetryReport(
        backend_id=BACKEND, agent_id="a", unix_ms=1_000 * second, backend_ready=True,
        source=telemetry_pb2.TELEMETRY_SOURCE_NVML,
        gpus=[telemetry_pb2.GpuReading(index=0, name="L4", mem_free_bytes=mem_free_gb << 30,
                                       mem_total_bytes=24 << 30, xid_events=list(xids))],
        models=[telemetry_pb2.ModelStats(variant="summarize-small", inference_count=n,
                                         execution_count=n, queue_ns=n * 1_000_000,
                                         compute_infer_ns=n * 40_000_000, ready=True)])


def _take(ingest: TelemetryIngest, report: telemetry_pb2.TelemetryReport,
          now: float) -> Taken:
    taken = Taken()
    ingest.take(report, "stream-1", "peer", now, taken)
    assert taken.used == 1
    return taken


def _removed(ingest: TelemetryIngest) -> str:
    sig = ingest.fleet.backends[BACKEND].signature
    assert sig is not None and isinstance(sig[0], tuple)
    return str(sig[0][1].removed)


def test_identical_readings_are_converted_once_and_a_changed_one_anew() -> None:
    ingest = _ingest()
    _take(ingest, _report(1), now=1.0)
    first = ingest.fleet.backends[BACKEND].last
    _take(ingest, _report(2), now=2.0)
    second = ingest.fleet.backends[BACKEND].last
    assert first is not None and second is not None
    assert second.gpus is first.gpus  # reused, not converted again
    assert second.variants["summarize-small"].inference_count == 40  # counters always read
    _take(ingest, _report(3, mem_free_gb=12), now=3.0)
    third = ingest.fleet.backends[BACKEND].last
    assert third is not None and third.gpus is not first.gpus
    assert third.gpus[0].mem_free_bytes == 12 << 30
    assert ingest.readings[BACKEND].unix_ms == 3_000  # ListBackends' report time


def test_a_steady_report_marks_nothing_changed() -> None:
    ingest = _ingest()
    for second in (1, 2, 3):
        _take(ingest, _report(second), now=float(second))
    ingest.fleet.take_dirty()
    taken = _take(ingest, _report(4), now=4.0)
    assert ingest.fleet.take_dirty() == (False, set())
    assert taken.flipped == []
    # ... and a real load change does (the rate doubles).
    _take(ingest, _report_at(5, 140), now=5.0)  # 60 calls/s after 20
    assert ingest.fleet.take_dirty() == (False, {BACKEND})


def _report_at(second: int, count: int) -> telemetry_pb2.TelemetryReport:
    """A report whose counters stand at ``count`` calls (a rate change from the previous)."""
    r = _report(second)
    m = r.models[0]
    m.inference_count = m.execution_count = count
    m.queue_ns, m.compute_infer_ns = count * 1_000_000, count * 40_000_000
    return r


def test_an_xid_hold_expires_though_the_readings_after_it_are_identical() -> None:
    ingest = _ingest()
    _take(ingest, _report(1), now=1.0)
    assert _removed(ingest) == ""
    taken = _take(ingest, _report(2, xids=(79,)), now=2.0)
    assert taken.flipped == [BACKEND] and "XID 79" in _removed(ingest)
    for second in (3, 4):  # the same readings, no new XID: still held
        assert _take(ingest, _report(second), now=float(second)).flipped == []
        assert "XID 79" in _removed(ingest)
    later = 2.0 + XID_HOLD_S + 1
    taken = _take(ingest, _report(5), now=later)
    assert taken.flipped == [BACKEND] and _removed(ingest) == ""
    # Once nothing is held, identical readings are reused again, verdict and all.
    before = ingest.fleet.backends[BACKEND].last
    _take(ingest, _report(6), now=later + 1)
    after = ingest.fleet.backends[BACKEND].last
    assert before is not None and after is not None and after.gpus is before.gpus
    assert _removed(ingest) == ""
