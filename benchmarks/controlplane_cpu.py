"""Placement's CPU per telemetry report, through the real servicer, in one process.

    python -m benchmarks.controlplane_cpu [--quick] [--levels 10000] [--before <export>]

No sockets: the same ``PlacementService`` that ``python -m services.cli placement`` wires
(``services.placement.main.build_service``) gets ``N`` registered backends, 100 watching
edges (``WatchRoutes`` generators drained by tasks, bytes counted) and 8 telemetry streams
fed serialised messages of 8 reports each (one simulated 8-GPU agent's round in
``TelemetryReport.more``), parsed in the stream as gRPC would. A round is one report per
backend, every backend's counters advanced by one second of 20 calls/s; the measured rounds
start after two warm-up rounds (first estimates, first rates) and each ends when placement
has ingested it and published what it set off (no backlog, nothing scheduled). CPU is this
process's ``time.process_time`` over the measured rounds, divided by the reports: the
parsing, ``StreamTelemetry``, the fleet's ingest, the coalesced rebuild and the pushes to
the edges. ``moving``: the fraction of backends whose call rate moves by 30 % in a round
(their rows change materially and are rebuilt and pushed).

``--before``: another checkout (a ``git archive`` export of an older commit) measured the
same way right before this one: this file runs there as a script, importing that
checkout's ``services`` and ``placement``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pathlib
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

ESTIMATE_S = (90, 240)  # 10,000 backends registered through the servicer per measurement
REGIONS = [("aws-us-east-1", "aws"), ("aws-us-west-2", "aws"), ("gcp-us-central1", "gcp"),
           ("gcp-europe-west4", "gcp"), ("azure-eastus", "azure")]
MODEL, VARIANT, ACCEL = "chat", "chat-v1", "nvidia-l4"
PER_MESSAGE, STREAMS, EDGES = 8, 8, 100
HERE = os.path.abspath(__file__)


def _mesh(d: pathlib.Path) -> pathlib.Path:
    prices = "".join(f'[[prices]]\naccelerator = "{ACCEL}"\ncloud = "{c}"\nregion = "*"\n'
                     f'price_class = "on-demand"\nusd_per_gpu_hour = 0.80\n'
                     for c in sorted({c for _, c in REGIONS}))
    (d / "prices.toml").write_text(prices)
    regions = "".join(f'[[regions]]\nname = "{r}"\ncloud = "{c}"\n' for r, c in REGIONS)
    (d / "mesh.toml").write_text(
        f'prices_file = "prices.toml"\nrun_dir = "{d}/run"\nbackends = []\n{regions}\n'
        f'[[models]]\nname = "{MODEL}"\ndefault_slo_ms = 500\n'
        f'variants = [{{ name = "{VARIANT}", quality = 0.8 }}]\n')
    return d / "mesh.toml"


def _round(pb: Any, n: int, tick: int, moving: float) -> list[bytes]:
    """One report per backend, serialised in messages of ``PER_MESSAGE``; counters as a
    busy backend's after ``tick`` seconds (20 calls/s of ~40 ms; the first ``moving``
    share of backends alternates between 20 and 26 calls/s)."""
    t = pb.telemetry_pb2
    unix_ms = 1_700_000_000_000 + tick * 1000
    out, batch = [], []
    moved = int(n * moving)
    for i in range(n):
        calls = 20 * tick + (6 * ((tick + 1) // 2) if i < moved else 0) + i % 13
        batch.append(t.TelemetryReport(
            backend_id=f"be-{i:06d}", agent_id="bench-agent",
            source=t.TELEMETRY_SOURCE_SIMULATED, unix_ms=unix_ms, backend_ready=True,
            inflight=tick % 3,
            gpus=[t.GpuReading(index=0, name="NVIDIA L4", gpu_util_pct=40.0,
                               mem_used_bytes=8 << 30, mem_free_bytes=16 << 30,
                               mem_total_bytes=24 << 30)],
            models=[t.ModelStats(variant=VARIANT, inference_count=calls,
                                 execution_count=calls, success_count=calls,
                                 queue_ns=calls * 1_000_000,
                                 compute_infer_ns=calls * (40_000_000 + tick % 7),
                                 ready=True)]))
        if len(batch) == PER_MESSAGE or i == n - 1:
            first = batch[0]
            first.more.extend(batch[1:])
            out.append(first.SerializeToString())
            batch = []
    return out


async def _measure(n: int, rounds: int, moving: float, profile: str) -> dict[str, float]:
    from services.api.switchyard.v1 import fleet_pb2, placement_pb2, telemetry_pb2
    from services.config import load_config
    from services.logs import configure
    from services.placement.main import build_service

    configure("warning")  # as the benchmarks run placement (--log-level warning)

    class _Pb:  # the generated modules this checkout has
        pass

    pb = _Pb()
    pb.telemetry_pb2 = telemetry_pb2  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="sy-cpcpu-") as tmp:
        service = build_service(load_config(_mesh(pathlib.Path(tmp))), preregister=False)
    service.raw_updates = True  # as main.register: WatchRoutes yields shared bytes
    for i in range(n):
        region, cloud = REGIONS[i % len(REGIONS)]
        await service.RegisterBackend(placement_pb2.RegisterBackendRequest(
            backend=fleet_pb2.Backend(
                id=f"be-{i:06d}", endpoint=f"10.0.0.1:{8000 + i % 50000}", cloud=cloud,
                region=region, accelerator=ACCEL, accelerator_count=1,
                price_class="on-demand", max_concurrency=4,
                variants=[fleet_pb2.VariantRef(logical_model=MODEL, variant=VARIANT,
                                               quality=0.8)])), None)
    service.hub.publish()
    received = [0, 0]  # updates, bytes

    async def edge(k: int) -> None:
        req = placement_pb2.WatchRoutesRequest(edge_id=f"edge-{k}",
                                                edge_region=REGIONS[k % len(REGIONS)][0])
        async for update in service.WatchRoutes(req, None):
            received[0] += 1
            received[1] += len(update) if isinstance(update, bytes) else update.ByteSize()

    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in range(STREAMS)]

    async def messages(q: asyncio.Queue[bytes | None]) -> AsyncIterator[Any]:
        while (raw := await q.get()) is not None:
            yield telemetry_pb2.TelemetryReport.FromString(raw)

    edges = [asyncio.create_task(edge(k)) for k in range(EDGES)]
    streams = [asyncio.create_task(service.StreamTelemetry(messages(q), None))
               for q in queues]
    hub, fleet = service.hub, service.fleet

    ticks = range(1, 3 + rounds)  # serialised before anything is measured
    prepared = {tick: _round(pb, n, tick, moving) for tick in ticks}

    async def one_round(tick: int) -> None:
        msgs = prepared.pop(tick)
        for j, raw in enumerate(msgs):
            queues[j % STREAMS].put_nowait(raw)
        while (any(not q.empty() for q in queues) or fleet.dirty or fleet.all_dirty  # noqa: ASYNC110 - polls the servicer
               or hub.backlog or hub._scheduled is not None
               or any(w.pushes for w in hub.watchers)):
            await asyncio.sleep(0.002)

    for tick in (1, 2):  # first estimates, first rates
        await one_round(tick)
    prof = cProfile.Profile() if profile else None
    v0, r0, b0 = hub.version, received[0], received[1]
    c0 = time.process_time()
    if prof:
        prof.enable()
    for tick in range(3, 3 + rounds):
        await one_round(tick)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    cpu = time.process_time() - c0
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*streams)
    for t in edges:
        t.cancel()
    reports = n * rounds
    return {"backends": n, "rounds": rounds, "moving": moving, "reports": reports,
            "cpu_s": cpu, "us_per_report": 1e6 * cpu / reports,
            "publishes": hub.version - v0, "updates_to_edges": received[0] - r0,
            "bytes_to_edges": received[1] - b0}


def measure(root: str, n: int, rounds: int, moving: float, profile: str = "") -> dict[str, float]:
    """One measurement in a fresh Python process running ``root``'s placement code."""
    out = subprocess.run(
        [sys.executable, HERE, "--role", "measure", "--levels", str(n), "--rounds",
         str(rounds), "--moving", str(moving), "--profile", profile],
        cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
        check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement in {root} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool, levels: list[int] | None = None, before: str | None = None,
        moving: tuple[float, ...] = (0.0, 0.1)) -> Any:
    from benchmarks.common import ROOT, Section, command_for, md_table, progress

    t0 = time.monotonic()
    levels = levels or [10000]
    rounds = 3 if quick else 10
    variants = [("before", before), ("after", ROOT)] if before else [("this checkout", ROOT)]
    rows, results = [], []
    for n in levels:
        for mv in moving:
            for label, root in variants:
                progress(f"controlplane_cpu: {n:,} backends, moving {mv:.0%}, {label}")
                r = measure(root, n, rounds, mv)
                results.append((label, r))
                rows.append([*([label] if before else []), f"{n:,}", f"{mv:.0%}",
                             f"{r['reports']:,.0f}", f"{r['cpu_s']:.2f}",
                             f"{r['us_per_report']:.1f}",
                             f"{1e6 / r['us_per_report']:,.0f}",
                             f"{r['publishes']:.0f}",
                             f"{r['bytes_to_edges'] / r['rounds'] / 1e6:.2f}"])
    table = md_table([*(["placement"] if before else []), "backends", "moving per round",
                      "reports", "CPU s", "CPU µs per report", "reports/s on one core",
                      "publishes", "MB to edges per round"], rows)
    notes = [
        "One process, no sockets: the real `PlacementService` (`build_service`), 100 "
        "`WatchRoutes` generators drained by tasks, 8 telemetry streams of serialised "
        "8-report messages parsed as gRPC would; two warm-up rounds, then one report per "
        "backend per round; each round ends when placement has published all it set off. "
        "CPU is the process's over the measured rounds (parse, ingest, rebuild, pushes) per "
        "report; `moving`: backends whose call rate moves 30 % every round. Shared host: "
        "other work competes for the core, so compare rows of one run.",
    ]
    if before:
        for n in levels:
            for mv in moving:
                pair = [r for _, r in results if r["backends"] == n and r["moving"] == mv]
                b, a = pair[0], pair[1]
                notes.append(
                    f"{n:,} backends, {mv:.0%} moving: {b['us_per_report']:.1f} → "
                    f"{a['us_per_report']:.1f} µs per report "
                    f"({b['us_per_report'] / a['us_per_report']:.1f}x less CPU), one core "
                    f"ingests {1e6 / b['us_per_report']:,.0f} → "
                    f"{1e6 / a['us_per_report']:,.0f} reports/s.")
    command = command_for(__name__, quick) + (
        f" --levels {','.join(map(str, levels))}" + (" --before <export of the old commit>"
                                                     if before else ""))
    return Section(title="Control plane: placement CPU per telemetry report", command=command,
                   table=table, notes=notes, elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--role", default="bench", choices=["bench", "measure"])
    p.add_argument("--levels", default="10000")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--moving", default="0,0.1")
    p.add_argument("--before", default="")
    p.add_argument("--profile", default="", help="measure: cProfile output file")
    p.add_argument("--top", type=int, default=0, help="measure: print the top N by tottime")
    args = p.parse_args()
    if args.role == "measure":
        result = asyncio.run(_measure(int(args.levels), args.rounds, float(args.moving),
                                      args.profile))
        if args.profile and args.top:
            pstats.Stats(args.profile, stream=sys.stderr).sort_stats("tottime").print_stats(
                args.top)
        print(json.dumps(result), flush=True)
        return
    section = run(args.quick, [int(x) for x in args.levels.split(",")], args.before or None,
                  tuple(float(x) for x in args.moving.split(",")))
    print(section.markdown())


if __name__ == "__main__":
    main()
