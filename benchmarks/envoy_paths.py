"""What each path of an Envoy edge costs: the fast path (compiled config) vs the slow path.

One Triton (tiny model), placement in its own process, and one Envoy edge exactly as
``switchyard up`` runs it with ``[edge] engine = "envoy"``: ``python -m services.edge.envoy``
(its slow path, the co-located Python edge, in that process; Envoy, 1 worker, its child).
The same bounded closed-loop tritonclient.grpc.aio load, once as plain calls (the fast path:
Envoy alone routes them) and once with ``x-min-quality: 0`` (a hint Envoy cannot compile:
the slow path, Envoy -> Python edge -> Triton), alternating, ``rounds`` times; the round
with the median rps is kept. CPU per call is billed to Envoy (its threads' schedstat) and to
the Python process (utime+stime) over the measured window; ``idle`` is what both burn per
second with no calls (the supervisor's snapshot poll, the slow path's placement link and
health checks), included in every row.

    python -m benchmarks.envoy_paths [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import InferInput, InferRequestedOutput

from benchmarks._fleet import MODEL, Fleet, _wait_infer
from benchmarks._load import schedstat_seconds
from benchmarks.common import (
    Section,
    children_pids,
    command_for,
    cpu_seconds,
    main,
    md_table,
    percentile,
    progress,
)
from services.ports import free_port

PATHS = {"fast (Envoy)": {}, "slow (Envoy + Python edge)": {"x-min-quality": "0"}}
CONCURRENCIES = (1, 8)


@dataclass
class Point:
    path: str
    concurrency: int
    calls: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    envoy_us: float  # CPU per call
    python_us: float


async def _load(address: str, headers: dict[str, str], concurrency: int, calls: int,
                seconds: float, pids: tuple[int, int]) -> Point:
    clients = [aioclient.InferenceServerClient(address) for _ in range(min(concurrency, 8))]
    inp = InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.random.default_rng(0).standard_normal((1, 16), np.float32))
    out = [InferRequestedOutput("OUTPUT0")]
    lat: list[float] = []
    errors = 0

    async def run(n: int, record: bool) -> None:
        nonlocal errors
        issued = 0
        deadline = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal issued, errors
            while issued < n and time.perf_counter() < deadline:
                issued += 1
                t = time.perf_counter()
                try:
                    await clients[i % len(clients)].infer(MODEL, [inp], outputs=out,
                                                          headers=headers, client_timeout=30)
                except Exception:
                    errors += record
                    continue
                if record:
                    lat.append(time.perf_counter() - t)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))

    try:
        await run(min(200, calls // 4), record=False)
        envoy0, py0, t0 = schedstat_seconds(pids[0]), cpu_seconds(pids[1]), time.perf_counter()
        await run(calls, record=True)
        elapsed = time.perf_counter() - t0
        envoy, py = schedstat_seconds(pids[0]) - envoy0, cpu_seconds(pids[1]) - py0
    finally:
        for c in clients:
            await c.close()
    lat.sort()
    n = len(lat) or 1
    return Point("", concurrency, len(lat), errors, len(lat) / elapsed,
                 percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, envoy / n * 1e6,
                 py / n * 1e6)


def _idle(pids: tuple[int, int], seconds: float) -> tuple[float, float]:
    """CPU per second of (Envoy, the Python process) with no calls."""
    e0, p0 = schedstat_seconds(pids[0]), cpu_seconds(pids[1])
    time.sleep(seconds)  # the measured window itself: nothing to wait for
    return ((schedstat_seconds(pids[0]) - e0) / seconds * 1e6,
            (cpu_seconds(pids[1]) - p0) / seconds * 1e6)


def run(quick: bool) -> Section:
    calls, seconds, rounds = (1500, 8.0, 3) if quick else (5000, 20.0, 5)
    load0 = os.getloadavg()[0]
    with Fleet() as fleet:
        progress("starting Triton and placement")
        fleet.start_triton()
        fleet.start_placement()
        port = free_port()
        cfg = fleet.config("envoy-paths", {"envoy-paths": port})
        proc = fleet._spawn([sys.executable, "-m", "services.edge.envoy", "--config", str(cfg),
                             "--id", "envoy-paths"], "envoy-paths.log")
        address = f"127.0.0.1:{port}"
        _wait_infer(address, MODEL, 60, fleet.tmp / "envoy-paths.log")
        envoy = next(p for p in children_pids(proc.pid))
        pids = (envoy, proc.pid)
        idle = _idle(pids, 3.0)
        runs: dict[tuple[str, int], list[Point]] = {}
        for r in range(rounds):
            order = list(PATHS) if r % 2 == 0 else list(reversed(PATHS))
            for conc in CONCURRENCIES:
                for path in order:
                    p = asyncio.run(_load(address, PATHS[path], conc, calls, seconds, pids))
                    p.path = path
                    runs.setdefault((path, conc), []).append(p)
                    progress(f"round {r + 1} c={conc} {path:<28} {p.rps:7.0f} rps  p50 "
                             f"{p.p50_ms:5.2f} ms  Envoy {p.envoy_us:5.0f} µs/call  Python "
                             f"{p.python_us:5.0f} µs/call" + (f"  ERRORS {p.errors}"
                                                             if p.errors else ""))
    kept = [sorted(ps, key=lambda p: p.rps)[len(ps) // 2] for ps in runs.values()]
    rows = [[p.path, p.concurrency, f"{p.rps:.0f}", f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}",
             f"{p.envoy_us:.0f}", f"{p.python_us:.0f}", f"{p.envoy_us + p.python_us:.0f}",
             p.errors] for p in sorted(kept, key=lambda p: (p.concurrency, p.path))]
    table = md_table(["path", "conc", "rps", "p50 ms", "p99 ms", "Envoy µs/call",
                      "Python µs/call", "total µs/call", "errors"], rows, "lrrrrrrrr")
    notes = [f"idle (no calls): Envoy {idle[0]:.0f} µs/s, the Python process {idle[1]:.0f} "
             "µs/s, inside every row's CPU",
             f"host load average (1 min) {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at "
             f"the end, on {os.cpu_count()} cores: CPU per call and latency grow with it"]
    for conc in CONCURRENCIES:
        f = next(p for p in kept if p.concurrency == conc and p.path.startswith("fast"))
        s = next(p for p in kept if p.concurrency == conc and p.path.startswith("slow"))
        notes.append(f"c={conc}: the slow path costs {s.envoy_us + s.python_us:.0f} µs of CPU "
                     f"per call against the fast path's {f.envoy_us + f.python_us:.0f} "
                     f"({(s.envoy_us + s.python_us) / (f.envoy_us + f.python_us):.1f}×); p50 "
                     f"{s.p50_ms - f.p50_ms:+.2f} ms")
    return Section("Envoy edge: fast path vs slow path", command_for(__name__, quick), table,
                   notes)


if __name__ == "__main__":
    main(run, __doc__)
