"""Prototype: the edge's per-call bookkeeping (metrics + access log) today vs batched.

    python -m benchmarks._accesslog

Times the edge's former per-call bookkeeping (3 ``labels()`` lookups, a histogram observe,
one structlog JSON line printed and flushed to stderr per call; reproduced below as
``per_call_structlog``) against ``services.edge.accesslog.AccessLog`` (cached labelled
children, records appended and written by a periodic task — its flush is timed too, since
it runs on the same event loop). stderr goes to a file, as for a deployed edge.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import structlog

from placement.model import Candidate, Hints
from services.edge.accesslog import AccessLog
from services.edge.main import EdgeMetrics
from services.edge.router import CallRecord
from services.logs import configure


def per_call_structlog(metrics: EdgeMetrics):  # type: ignore[no-untyped-def]
    access = structlog.get_logger("switchyard.edge.access")

    def done(rec: CallRecord) -> None:
        dep = rec.chosen.deployment_id if rec.chosen else ""
        metrics.calls.labels(rec.model, dep, rec.status).inc()
        metrics.latency.labels(rec.model).observe(rec.latency_ms / 1000)
        metrics.attempts.labels(rec.model).inc(rec.attempts)
        access.info("call", request_id=rec.request_id, model=rec.model, deployment=dep,
                    attempts=rec.attempts, latency_ms=round(rec.latency_ms, 3),
                    cost_usd=rec.chosen.cost_usd if rec.chosen else 0.0,
                    slo_ms=rec.hints.slo_ms if rec.hints else None, slo_met=rec.slo_met,
                    status=rec.status)
    return done


def batched(metrics: EdgeMetrics, out):  # type: ignore[no-untyped-def]
    log = AccessLog(metrics.calls, metrics.latency, metrics.attempts, out=out)

    def done(rec: CallRecord) -> None:
        log.done(rec)
        if len(log.buffer) >= 256:  # the edge flushes every 100 ms; cost counted here
            log.flush()
    return done


def bench(fn, rec: CallRecord, n: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(1000):
        fn(rec)
    t = time.perf_counter()
    for _ in range(n):
        fn(rec)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    c = Candidate("bench-t4/tiny-v1", "bench-t4", "127.0.0.1:1", "tiny-v1", "r", "aws",
                  "nvidia-t4", 0.8, 10.0, 1.0, 0.0, 5.0, 1e-6, 10.0)
    rec = CallRecord("9f1c2a7b3e4d5f60", "tiny", Hints(slo_ms=1000), c, 1, True, 1.234)
    log = tempfile.NamedTemporaryFile("w", delete=False)  # noqa: SIM115
    real = sys.stderr
    sys.stderr = log
    configure("info")
    n = 50_000
    today = bench(per_call_structlog(EdgeMetrics()), rec, n)
    proto = bench(batched(EdgeMetrics(), log), rec, n)
    sys.stderr = real
    log.close()
    os.unlink(log.name)
    print(f"per-call structlog: {today:.1f} µs/call; AccessLog: {proto:.1f} µs/call "
          f"(saves {today - proto:.1f} µs/call)")
    _ = json  # the prototype formats by hand; json.dumps per record costs ~3 µs more


if __name__ == "__main__":
    main()
