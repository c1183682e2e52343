"""Where a call's time goes inside Envoy: plain Envoy against the pushed module config (issue 12).

Each variant of ``benchmarks/envoy_configs.py`` / ``envoy_bisect.py`` named (default: ``plain``,
``dm`` — what placement pushes to a node that loads the C dynamic module, as a static
bootstrap — and ``dm-no-module``) gets one more access log, a file, with Envoy's own time
points of every call (``%COMMON_DURATION(A:B:us)%``): the first and last byte from the caller
(``DS_RX_BEG``/``DS_RX_END``), the first and last byte to Triton (``US_TX_*``), from Triton
(``US_RX_*``) and the last byte to the caller (``DS_TX_END``). The same log is added to every
variant, so it costs them alike. Per variant, the median of each phase over every logged call
(warm-ups included, all at the one concurrency), beside the client's p50 (median over rounds,
each round every variant in turn): what the client waits beyond Envoy's first-to-last byte is
outside Envoy (client, kernel, scheduling). A tritonclient call's HEADERS and DATA reach Envoy
in one read, so the phases are Envoy's own work in its order, not network waits: plain Envoy
runs the router on the headers before its codec reaches the DATA frame (its upstream headers
are encoded before ``DS_RX_END``); the module holds the headers until the body names the
model, so the same work falls in its ``DS_RX_END → US_TX_END``. Envoy's request side is
``DS_RX_BEG → DS_RX_END`` plus ``DS_RX_END → US_TX_END``.

    python -m benchmarks.envoy_timing [--quick] [--only plain,dm,...] [--conc N] [--rounds N]
                                      [--period-ms P]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._fleet import Fleet, Target, _wait_infer
from benchmarks._load import measure, schedstat_seconds
from benchmarks.common import Section, command_for, main, md_table, progress, take_option
from benchmarks.dataplane import _loop_factory
from benchmarks.envoy_bisect import BISECT
from benchmarks.envoy_configs import VARIANTS, Config, Variant
from benchmarks.triton_pacing import _paced
from services.ports import free_port
from services.xds import native

ESTIMATE_S = (60, 200)
DEFAULT = ("plain", "dm", "dm-no-module")
PHASES = (("DS_RX_BEG", "DS_RX_END"), ("DS_RX_BEG", "US_TX_BEG"), ("DS_RX_END", "US_TX_END"),
          ("US_TX_END", "US_RX_BEG"), ("US_RX_BEG", "DS_TX_END"), ("DS_RX_BEG", "DS_TX_END"))
FORMAT = " ".join(f"%COMMON_DURATION({a}:{b}:us)%" for a, b in PHASES) + "\n"
ALL = {"plain": VARIANTS["plain"], **{v.name: v for v in BISECT}}


def timing_log(path: Path) -> Any:
    def edit(c: Config) -> None:
        c.access_log.append({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path), "log_format": {"text_format_source": {"inline_string": FORMAT}}}})
    return edit


def phases(path: Path) -> tuple[int, list[float | None]]:
    """Logged calls, and each phase's median over the calls that have it (a time point Envoy
    did not reach is '-'); None for a phase no call has."""
    cols: list[list[int]] = [[] for _ in PHASES]
    n = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != len(PHASES):
            continue
        n += 1
        for col, x in zip(cols, parts, strict=True):
            if x.isdigit():
                col.append(int(x))
    return n, [statistics.median(c) if c else None for c in cols]


def start(fleet: Fleet, name: str) -> tuple[Target, Path, subprocess.Popen[bytes]]:
    base = ALL[name]
    log = fleet.tmp / f"{name}.timing"
    v = Variant(name, base.what, base.model, (*base.edits, timing_log(log)))
    port = free_port()
    p = fleet.start_envoy(name, v.bootstrap(fleet.triton_address, fleet.placement_address,
                                            port, free_port()))
    address = f"127.0.0.1:{port}"
    _wait_infer(address, v.model, 30, fleet.tmp / f"{name}.log")
    return Target(name, address, v.model, [p.pid]), log, p


def run(quick: bool, names: Sequence[str] = DEFAULT, conc: int = 1, rounds: int = 0,
        period_ms: float = 0.0) -> Section:
    """``period_ms``: instead of the closed loop, one call started every ``period_ms`` at c=1
    (``triton_pacing._paced``): every variant at one rate, so Triton's phase compares."""
    calls, seconds, rounds = (1000, 4.0, rounds or 4) if quick else (3000, 10.0, rounds or 6)
    t0 = time.monotonic()
    client: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with Fleet() as fleet:
        fleet.start_triton()
        fleet.start_placement()
        os.environ[native.SEARCH_PATH_ENV] = str(native.BUILD_DIR)  # for the module's variants
        started = {n: start(fleet, n) for n in names}
        for r in range(rounds):
            order = list(names[r % len(names):]) + list(names[:r % len(names)])
            for n in order:
                t = started[n][0]
                if period_ms:
                    _, _, cpu, p50 = asyncio.run(_paced(t.address, t.model, [], t.pids(),
                                                        period_ms, calls))
                    client[n].append((p50 * 1000, cpu))
                    progress(f"round {r + 1}/{rounds} {n:<13} p50 {p50 * 1000:6.0f} µs  "
                             f"{cpu:5.0f} µs/call")
                    continue
                p = measure(n, t.address, t.model, conc, calls, seconds, t.pids(),
                            warmup=min(200, calls // 4), loop_factory=_loop_factory(),
                            cpu_of=schedstat_seconds)
                client[n].append((p.p50_ms * 1000, p.proxy_cpu_us))
                progress(f"round {r + 1}/{rounds} {n:<13} p50 {p.p50_ms * 1000:6.0f} µs  "
                         f"{p.proxy_cpu_us:5.0f} µs/call" + (f" ERRORS {p.errors}"
                                                              if p.errors else ""))
        for _, _, proc in started.values():  # Envoy writes its file logs out as it exits
            proc.terminate()
            proc.wait(10)
        rows = []
        for n in names:
            logged, meds = phases(started[n][1])
            p50 = statistics.median(c[0] for c in client[n])
            total = meds[-1]
            cpu = statistics.median(c[1] for c in client[n])
            rows.append([n, logged, f"{p50:.0f}", f"{cpu:.0f}",
                         *("–" if m is None else f"{m:.0f}" for m in meds),
                         "–" if total is None else f"{p50 - total:.0f}"])
    table = md_table(["variant", "calls logged", "client p50 µs", "Envoy CPU µs/call",
                      *(f"{a} → {b} µs" for a, b in PHASES), "client p50 − Envoy's total µs"],
                     rows, "l" + "r" * (len(PHASES) + 4))
    load = (f"one call started every {period_ms:g} ms (c=1), {calls} calls after 50 warm-up "
            "calls" if period_ms else f"Concurrency {conc}; each point {calls} calls or "
            f"{seconds:g} s after {min(200, calls // 4)} warm-up calls")
    notes = [f"{load}; {rounds} rounds, the variants in a rotated "
             "order each round; client p50 and CPU: medians over rounds; phases: medians over "
             "every logged call (warm-ups included)."]
    command = command_for(__name__, quick)
    if tuple(names) != DEFAULT:
        command += f" --only {','.join(names)}"
    if conc != 1:
        command += f" --conc {conc}"
    if rounds != (4 if quick else 6):
        command += f" --rounds {rounds}"
    if period_ms:
        command += f" --period-ms {period_ms:g}"
    return Section("Envoy edges: where a call's time goes inside Envoy", command, table, notes,
                   elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    only, conc_arg = take_option("--only"), take_option("--conc")
    rounds_arg, period = take_option("--rounds"), float(take_option("--period-ms", "0"))
    chosen = tuple(only.split(",")) if only else DEFAULT
    unknown = [n for n in chosen if n not in ALL]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {', '.join(unknown)}; known: "
                         f"{', '.join(ALL)}")
    main(lambda quick: run(quick, chosen, int(conc_arg or 1), int(rounds_arg or 0), period),
         __doc__)
