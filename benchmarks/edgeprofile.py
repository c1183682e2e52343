"""Where the edge's CPU goes per routed call: cProfile of an in-process edge under load.

Triton and placement run as their own processes; the edge runs in this process on uvloop
(as shipped) with cProfile on its event-loop thread; the load (concurrency 8, the same
client as the data-plane benchmark) comes from a child process. The table lists the
functions with the most *own* time per routed call, and the process CPU per call with and
without the profiler (cProfile inflates Python-level costs; the ranking is what counts).
gRPC's C-core threads are not visible to cProfile: their share is the CPU the process used
minus what the event-loop thread used.

    python -m benchmarks.edgeprofile [--quick]
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import time

from benchmarks._fleet import MODEL, Fleet
from benchmarks.common import Section, command_for, main, md_table, progress

ESTIMATE_S = (40, 60)
CONCURRENCY = 8

# Started before the edge's gRPC server exists (forking beside live gRPC threads aborts);
# reads "address model concurrency calls" lines, answers "calls rps p50_ms".
_LOADER = """
import sys, uvloop
from benchmarks._load import measure
for line in sys.stdin:
    a, m, c, n = line.split()
    p = measure("edge", a, m, int(c), int(n), 60.0, [], warmup=0,
                loop_factory=uvloop.new_event_loop)
    print(p.calls, p.rps, p.p50_ms, flush=True)
"""


def _thread_cpu() -> float:
    return time.thread_time()


async def _serve_and_profile(fleet: Fleet, calls: int) -> tuple[pstats.Stats, dict[str, float]]:
    from services.config import load_config
    from services.edge.main import start_edge
    from services.logs import configure

    cfg = load_config(fleet.config("profiled", {"profiled": 0}))
    loader = subprocess.Popen([sys.executable, "-c", _LOADER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    fleet.procs.append(loader)  # type: ignore[arg-type]
    log = open(fleet.tmp / "profiled-access.log", "w")  # noqa: SIM115 - closed below
    stderr = sys.stderr
    sys.stderr = log  # the access log goes where a deployed edge's stderr would
    configure("info")
    try:
        running = await start_edge(cfg, cfg.edges[0], port=0,
                                   placement=[fleet.placement_address], metrics_port=0)
        address = f"127.0.0.1:{running.port}"
        for _ in range(100):
            if running.router.store.candidates.get(MODEL):
                break
            await asyncio.sleep(0.1)
        out: dict[str, float] = {}

        async def load(n: int) -> tuple[float, float, float]:
            assert loader.stdin is not None and loader.stdout is not None
            t_proc, t_loop = time.process_time(), _thread_cpu()
            loader.stdin.write(f"{address} {MODEL} {CONCURRENCY} {n}\n")
            loader.stdin.flush()
            answer = await asyncio.to_thread(loader.stdout.readline)
            got = answer.split()
            done = int(got[0])
            return done, (time.process_time() - t_proc) / done * 1e6, \
                (_thread_cpu() - t_loop) / done * 1e6

        await load(max(200, calls // 5))  # warm-up
        done, proc_us, loop_us = await load(calls)
        out.update(plain_calls=done, plain_proc_us=proc_us, plain_loop_us=loop_us)
        prof = cProfile.Profile()
        prof.enable()
        done, proc_us, loop_us = await load(calls)
        prof.disable()
        out.update(prof_calls=done, prof_proc_us=proc_us, prof_loop_us=loop_us)
        await running.stop()
        assert loader.stdin is not None
        loader.stdin.close()
    finally:
        sys.stderr = stderr
        configure("info", json=False)  # back to the terminal before the log file closes
        log.close()
    return pstats.Stats(prof), out


def top_rows(stats: pstats.Stats, calls: int, limit: int) -> list[list[object]]:
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    items = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in items[:limit]:
        where = _short(file)
        rows.append([f"`{func}`", f"{where}:{line}" if line else where, nc / calls,
                     tt / calls * 1e6, ct / calls * 1e6, 100 * tt / total])
    return rows


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.basename(path) or path


def run(quick: bool) -> Section:
    calls = 3000 if quick else 8000
    t0 = time.monotonic()
    with Fleet() as fleet:
        progress("starting Triton and placement")
        fleet.start_triton()
        fleet.start_placement()
        progress(f"in-process edge; {calls} calls at concurrency {CONCURRENCY} from a child "
                 "process, once plain and once under cProfile")
        import uvloop

        stats, m = uvloop.run(_serve_and_profile(fleet, calls))
    rows = top_rows(stats, int(m["prof_calls"]), 25)
    progress(f"edge process CPU {m['plain_proc_us']:.0f} µs/call "
             f"(event-loop thread {m['plain_loop_us']:.0f}); under cProfile "
             f"{m['prof_proc_us']:.0f} µs/call")
    for r in rows[:12]:
        progress(f"  {r[3]:7.1f} µs own  {r[4]:7.1f} µs cum  {r[0]} {r[1]}")
    table = md_table(["function", "where", "calls/call", "own µs/call", "cum µs/call",
                      "% of profiled"], rows, "llrrrr")
    c_core = m["plain_proc_us"] - m["plain_loop_us"]
    notes = [
        f"Without the profiler the edge process used **{m['plain_proc_us']:.0f} µs CPU per "
        f"call**: {m['plain_loop_us']:.0f} µs on the event-loop thread (Python + Cython "
        f"grpc.aio glue + the C-core work it runs inline) and {c_core:.0f} µs on other threads "
        "(gRPC C-core pollers, executor). Under cProfile: "
        f"{m['prof_proc_us']:.0f} µs/call, so own-times above are inflated ~"
        f"{m['prof_loop_us'] / max(m['plain_loop_us'], 1):.1f}x but rank correctly.",
        "Own µs = time inside the function itself; cum µs includes its callees. `calls/call`"
        " = how many times it runs per routed request.",
    ]
    return Section("Edge hot path: cProfile per routed call", command_for(__name__, quick),
                   table, notes, elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    main(run, __doc__)
