"""Triton's CPU per call against the gap between calls: the same calls, direct (issue 12).

In the data-plane benchmark a slower proxy at concurrency 1 showed Triton spending more CPU
per call behind it (the quiet-host run of 365d182: 600 µs behind plain Envoy at 760 rps,
1,010 µs behind ``envoy-sy`` at 388 rps). That reads as different upstream traffic; the
Envoy counters (``benchmarks.dataplane --stats``) show the same traffic per call. This
benchmark holds the traffic fixed, one client calling Triton directly at concurrency 1,
and only widens the gap between a call's answer and the next call (the client waits
``gap`` ms, spinning, so no timer granularity): if Triton's CPU per call rises as the gap
widens, its CPU per call measures the rate as well as the call, and a proxy that lowers the
rate raises Triton's CPU per call without sending it anything more.

    python -m benchmarks.triton_pacing [--quick] [--gaps 0,0.5,1,2] [--rounds N]
    python -m benchmarks.triton_pacing [--quick] --through envoy,envoy-sy [--period-ms 4]

``--through``: the other way round: Triton's CPU per call behind each named target of
``benchmarks.dataplane`` (and ``direct``) with the rate held equal, one call started every
``--period-ms``: what is left of the difference is what the calls carry.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import tritonclient.grpc.aio as aioclient

from benchmarks._fleet import VARIANT, Fleet
from benchmarks._load import _inputs
from benchmarks.common import (
    Section,
    children_pids,
    command_for,
    cpu_seconds_all,
    main,
    md_table,
    progress,
    take_option,
)

ESTIMATE_S = (30, 90)
GAPS_MS = (0.0, 0.5, 1.0, 2.0)


async def _point(address: str, pids: list[int], gap_ms: float, calls: int
                 ) -> tuple[float, float]:
    """``calls`` calls at concurrency 1, ``gap_ms`` between each answer and the next call:
    (rps, Triton's CPU µs per call)."""
    client = aioclient.InferenceServerClient(address)
    inputs, outputs = _inputs()
    try:
        for _ in range(50):
            await client.infer(VARIANT, inputs, outputs=outputs)
        b0, t0 = cpu_seconds_all(pids), time.perf_counter()
        for _ in range(calls):
            await client.infer(VARIANT, inputs, outputs=outputs)
            until = time.perf_counter() + gap_ms / 1000
            while time.perf_counter() < until:  # spin: nothing else is waiting on the loop
                pass
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds_all(pids) - b0
    finally:
        await client.close()
    return calls / elapsed, cpu / calls * 1e6


async def _paced(address: str, model: str, backend: list[int], proxy: list[int],
                 period_ms: float, calls: int) -> tuple[float, float, float, float]:
    """``calls`` calls at concurrency 1, the i-th started ``i * period_ms`` after the first
    (at once when the one before it ended later): the same rate through every target whose
    calls take less than the period. (rps, Triton's and the proxy's CPU µs per call, p50 ms)."""
    client = aioclient.InferenceServerClient(address)
    inputs, outputs = _inputs()
    lat: list[float] = []
    try:
        for _ in range(50):
            await client.infer(model, inputs, outputs=outputs)
        b0, p0 = cpu_seconds_all(backend), cpu_seconds_all(proxy)
        t0 = time.perf_counter()
        for i in range(calls):
            start = t0 + i * period_ms / 1000
            if start - time.perf_counter() > 0.001:
                await asyncio.sleep(start - time.perf_counter() - 0.001)
            while time.perf_counter() < start:  # the last ms spun: no timer granularity
                pass
            t = time.perf_counter()
            await client.infer(model, inputs, outputs=outputs)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        b, p = cpu_seconds_all(backend) - b0, cpu_seconds_all(proxy) - p0
    finally:
        await client.close()
    return (calls / elapsed, b / calls * 1e6, p / calls * 1e6 if proxy else float("nan"),
            statistics.median(lat) * 1000)


def run_through(quick: bool, names: tuple[str, ...], period_ms: float, rounds: int = 0
                ) -> Section:
    """Triton's CPU per call behind each target at one paced rate (``--through``)."""
    from benchmarks.dataplane import start_targets

    calls, rounds = (800, rounds or 3) if quick else (3000, rounds or 5)
    t0 = time.monotonic()
    got: dict[str, list[tuple[float, float, float, float]]] = {}
    with Fleet() as fleet:
        targets = start_targets(fleet, ("direct", *names))
        assert fleet.triton is not None
        backend = [fleet.triton.pid, *children_pids(fleet.triton.pid)]
        order = list(targets)
        for r in range(rounds):
            for n in order[r % len(order):] + order[:r % len(order)]:
                t = targets[n]
                pt = asyncio.run(_paced(t.address, t.model, backend, t.pids(), period_ms,
                                        calls))
                got.setdefault(n, []).append(pt)
                progress(f"round {r + 1}/{rounds} {n:<9} {pt[0]:5.0f} rps  Triton "
                         f"{pt[1]:5.0f} µs/call  proxy {pt[2]:5.0f} µs/call  p50 {pt[3]:.2f} ms")
    rows = []
    for n, pts in got.items():
        tri = [p[1] for p in pts]
        rows.append([n, f"{statistics.median(p[0] for p in pts):.0f}",
                     f"{statistics.median(p[3] for p in pts):.2f}",
                     f"{statistics.median(tri):.0f}", f"{min(tri):.0f}–{max(tri):.0f}",
                     "–" if n == "direct" else f"{statistics.median(p[2] for p in pts):.0f}"])
    table = md_table(["target", "rps", "p50 ms", "Triton CPU µs/call", "min–max",
                      "proxy CPU µs/call"], rows, "lrrrrr")
    notes = [f"Each point: {calls} calls after 50 warm-up calls, concurrency 1, one call "
             f"started every {period_ms:g} ms; {rounds} rounds, the targets in a rotated order "
             "each round; medians over rounds."]
    return Section("Triton's CPU per call behind each target at one rate", command_for(
        __name__, quick) + f" --through {','.join(names)} --period-ms {period_ms:g}"
        + (f" --rounds {rounds}" if rounds != (3 if quick else 5) else ""), table, notes,
        elapsed_s=time.monotonic() - t0)


def run(quick: bool, gaps: tuple[float, ...] = GAPS_MS, rounds: int = 0) -> Section:
    calls, rounds = (800, rounds or 2) if quick else (3000, rounds or 3)
    t0 = time.monotonic()
    got: dict[float, list[tuple[float, float]]] = {g: [] for g in gaps}
    with Fleet() as fleet:
        progress("starting Triton (tiny model: matmul_n=8, matmul_iters=1)")
        fleet.start_triton()
        assert fleet.triton is not None
        pids = [fleet.triton.pid, *children_pids(fleet.triton.pid)]
        c0 = cpu_seconds_all(pids)
        time.sleep(2.0)
        idle = (cpu_seconds_all(pids) - c0) / 2.0
        for r in range(rounds):
            for g in gaps:
                rps, us = asyncio.run(_point(fleet.triton_address, pids, g, calls))
                got[g].append((rps, us))
                progress(f"round {r + 1}/{rounds} gap {g:g} ms: {rps:.0f} rps, "
                         f"Triton {us:.0f} µs/call")
    rows = []
    for g in gaps:
        rps = statistics.median(p[0] for p in got[g])
        us = statistics.median(p[1] for p in got[g])
        rows.append([f"{g:g}", f"{rps:.0f}", f"{us:.0f}",
                     f"{min(p[1] for p in got[g]):.0f}–{max(p[1] for p in got[g]):.0f}",
                     f"{100 * rps * us / 1e6:.0f} %"])
    table = md_table(["gap ms", "rps", "Triton CPU µs/call", "min–max", "Triton, of a core"],
                     rows, "rrrrr")
    first, last = rows[0], rows[-1]
    notes = [f"Triton idle (no calls, 2 s): {100 * idle:.1f} % of a core.",
             f"From gap {first[0]} ms to {last[0]} ms: {first[1]} → {last[1]} rps, Triton "
             f"{first[2]} → {last[2]} µs per call (medians of {rounds} rounds), the calls "
             "alike.",
             f"Each point: {calls} calls after 50 warm-up calls, one tritonclient.grpc.aio "
             "client, concurrency 1, straight to Triton."]
    command = command_for(__name__, quick)
    if gaps != GAPS_MS:
        command += f" --gaps {','.join(f'{g:g}' for g in gaps)}"
    return Section("Triton's CPU per call against the gap between calls", command, table,
                   notes, elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    gaps_arg, rounds_arg = take_option("--gaps"), take_option("--rounds")
    through, period = take_option("--through"), float(take_option("--period-ms", "4"))
    gaps = tuple(float(g) for g in gaps_arg.split(",")) if gaps_arg else GAPS_MS
    if through:
        main(lambda quick: run_through(quick, tuple(through.split(",")), period,
                                       int(rounds_arg or 0)), __doc__)
    else:
        main(lambda quick: run(quick, gaps, int(rounds_arg or 0)), __doc__)
