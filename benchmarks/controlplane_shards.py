"""Control plane scaled out: two placement shards by region, simulated agents, 100 edges.

    python -m benchmarks.controlplane_shards [--quick] [--levels 10000,20000] [--baseline]

The same measurement as ``benchmarks.controlplane`` with ``[[placement.shards]]``: two
``python -m services.cli placement`` processes, each pinned to its own core and owning the
backend regions ``REGIONS[0::2]`` and ``REGIONS[1::2]`` (3 and 2 of the 5 regions, so 60 %
and 40 % of the backends); one agents process per shard (``--regions``) registers and
streams only its shard's backends; this process holds 100 edges that each watch BOTH shards
(as a sharded Python edge does) and the probe, a backend of one shard, flipped between
ready and not ready. Propagation is until every edge saw the flip on its watch of the
probe's shard; ingest, CPU and bytes are summed over the shards (CPU also per shard).
``--baseline`` first measures one unsharded placement at each level in the same run
(``benchmarks.controlplane.measure``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import grpc

from benchmarks import controlplane
from benchmarks.common import ROOT, Section, command_for, cpu_seconds, md_table, percentile, progress
from benchmarks.controlplane import (
    BACKLOG,
    GRPC_OPTS,
    INGESTED,
    PROBE,
    REGIONS,
    WARM_MAX_S,
    WARM_MIN_S,
    Edges,
    _metric,
    _probe_stream,
    backend_pb,
    mesh_files,
    rate_class,
    settled,
)
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.ports import free_port

ESTIMATE_S = (240, 600)
SHARDS = 2


def shard_regions(k: int) -> list[int]:
    """The REGIONS indexes shard ``k`` owns."""
    return list(range(k, len(REGIONS), SHARDS))


def sharded_mesh(d: pathlib.Path, k: int, ports: list[int], mports: list[int]) -> pathlib.Path:
    """Shard ``k``'s mesh file: the control-plane benchmark's, with every shard listed (a
    sharded replica serves /metrics on its shard's ``metrics_ports``, not ``[placement]``'s)."""
    sub = d / f"shard{k}"
    sub.mkdir()
    path = mesh_files(sub, ports[k], mports[k])
    shards = "".join(
        f'\n[[placement.shards]]\nreplicas = ["127.0.0.1:{ports[j]}"]\n'
        f'metrics_ports = [{mports[j]}]\n'
        f'regions = [{", ".join(json.dumps(REGIONS[i][0]) for i in shard_regions(j))}]\n'
        for j in range(SHARDS))
    path.write_text(path.read_text() + shards)
    return path


@dataclass
class ShardedLevel:
    gpus: int
    edges: int
    register_s: float
    startup_s: float
    ingest_per_s: float
    cpu_pct: list[float]  # per shard
    agents_cpu_pct: float
    update_mb_per_s: float
    delays_ms: list[float]
    timeouts: int
    load1: float
    shards: int = SHARDS
    label: str = ""  # "before" / "after" with --before

    @classmethod
    def unsharded(cls, lv: controlplane.Level) -> ShardedLevel:
        return cls(lv.gpus, lv.edges, lv.register_s, lv.startup_s, lv.ingest_per_s,
                   [lv.cpu_pct], lv.agents_cpu_pct, lv.update_mb_per_s, lv.delays_ms,
                   lv.timeouts, lv.load1, shards=1)


def _pinned(core: int) -> list[str]:
    """``taskset`` to run a process on ``core`` alone (nothing when the machine has fewer)."""
    return ["taskset", "-c", str(core)] if core < (os.cpu_count() or 1) else []


async def measure(gpus: int, edges: int, window_s: float, changes: int,
                  timeout_s: float, root: str = ROOT) -> ShardedLevel:
    """``root``: the checkout the placement shards run from (agents and edges run from
    this one)."""
    with tempfile.TemporaryDirectory(prefix="sy-cps-") as tmp:
        d = pathlib.Path(tmp)
        ports, mports = [free_port() for _ in range(SHARDS)], [free_port() for _ in range(SHARDS)]
        env = dict(os.environ, PYTHONPATH=ROOT)
        placement_env = dict(os.environ, PYTHONPATH=root)
        procs: list[subprocess.Popen[str]] = []
        agents: list[subprocess.Popen[str]] = []
        logs = [open(d / f"placement{k}.log", "w") for k in range(SHARDS)]  # noqa: SIM115
        try:
            for k in range(SHARDS):
                cfg = sharded_mesh(d, k, ports, mports)
                procs.append(subprocess.Popen(
                    [*_pinned(k), sys.executable, "-m", "services.cli", "--log-level",
                     "warning", "placement", "--config", str(cfg)], cwd=root,
                    env=placement_env,
                    stdout=logs[k], stderr=subprocess.STDOUT, text=True))
            addresses = [f"127.0.0.1:{p}" for p in ports]
            channels = [grpc.aio.insecure_channel(a, options=GRPC_OPTS) for a in addresses]
            for ch in channels:
                await asyncio.wait_for(ch.channel_ready(), 30)
            probe = backend_pb(PROBE)
            home = next(k for k in range(SHARDS) for i in shard_regions(k)
                        if REGIONS[i][0] == probe.region)
            stub = placement_pb2_grpc.PlacementStub(channels[home])
            await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=probe))
            run_s = WARM_MAX_S + window_s + changes * (timeout_s + 5.0)
            t_reg = time.monotonic()
            for k in range(SHARDS):
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.controlplane", "--role", "agents",
                     "--address", addresses[k], "--backends", str(gpus), "--streams", "8",
                     "--seconds", str(run_s), "--per-message", "8",
                     "--regions", ",".join(str(i) for i in shard_regions(k))],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
            for a in agents:
                assert a.stdout is not None
                json.loads(await asyncio.to_thread(a.stdout.readline))
            register_s = time.monotonic() - t_reg
            progress(f"controlplane_shards: {gpus:,} backends registered in {register_s:.1f} s")
            states: asyncio.Queue[bool] = asyncio.Queue()
            stop = asyncio.Event()
            probe_task = asyncio.create_task(_probe_stream(stub, states, stop))
            watches = [Edges(a, edges) for a in addresses]  # every edge watches every shard
            for w in watches:
                await w.start()

            def ingested() -> float:
                return sum(_metric(m, INGESTED) for m in mports)

            started, startup_s = time.monotonic(), math.nan
            while time.monotonic() - started < WARM_MAX_S:
                await asyncio.sleep(0.5)
                if time.monotonic() - started >= WARM_MIN_S and ingested() >= 2 * gpus:
                    startup_s = time.monotonic() - started
                    break
            classes: list[str] = []  # as benchmarks.controlplane: no backlog draining
            while time.monotonic() - started < WARM_MAX_S and not settled(classes):
                n_a, t_a = ingested(), time.monotonic()
                await asyncio.sleep(2.0)
                classes.append(rate_class((ingested() - n_a) / (time.monotonic() - t_a), gpus,
                                          sum(_metric(m, BACKLOG) for m in mports)))
            a0 = sum(cpu_seconds(a.pid) for a in agents)
            c0 = [cpu_seconds(p.pid) for p in procs]
            n0, t0, b0 = ingested(), time.monotonic(), sum(w.bytes for w in watches)
            await asyncio.sleep(window_s)
            c1 = [cpu_seconds(p.pid) for p in procs]
            n1, t1, b1 = ingested(), time.monotonic(), sum(w.bytes for w in watches)
            a1 = sum(cpu_seconds(a.pid) for a in agents)
            load1 = os.getloadavg()[0]
            delays, timeouts = await controlplane.flip_probe(
                states, watches[home], changes, timeout_s, f"controlplane_shards: {gpus:,} GPUs")
            stop.set()
            for w in watches:
                await w.stop()
            probe_task.cancel()
            for ch in channels:
                await ch.close()
            dt = t1 - t0
            return ShardedLevel(gpus, edges, register_s, startup_s, (n1 - n0) / dt,
                                [100 * (b - a) / dt for a, b in zip(c0, c1, strict=True)],
                                100 * (a1 - a0) / dt, (b1 - b0) / dt / 1e6, delays, timeouts,
                                load1)
        finally:
            for p in [*agents, *procs]:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
            for f in logs:
                f.close()


def _p99(lv: ShardedLevel) -> str:
    return "timeouts" if lv.timeouts else f"{percentile(sorted(lv.delays_ms), 99):,.0f} ms"


def _state(lv: ShardedLevel) -> str:
    kept = lv.ingest_per_s / lv.gpus
    return ("steady" if 0.99 <= kept <= 1.03 else "behind" if kept < 0.99
            else "still draining a backlog")


def notes(levels: list[ShardedLevel]) -> list[str]:
    worst = [lv for lv in levels if lv.shards == SHARDS][-1]
    kept = worst.ingest_per_s / worst.gpus
    p99 = percentile(sorted(worst.delays_ms), 99)
    shares = [sum(1 for i in range(worst.gpus) if i % len(REGIONS) in shard_regions(k))
              for k in range(SHARDS)]
    owned = ", ".join(f"shard {k}: " + " ".join(REGIONS[i][0] for i in shard_regions(k))
                      for k in range(SHARDS))
    state = _state(worst)
    out = [
        f"{SHARDS} placement processes (`[[placement.shards]]`), shard k pinned to core k "
        f"(`taskset`) and owning regions {owned}"
        f"; at {worst.gpus:,} GPUs that is {' / '.join(f'{n:,}' for n in shares)} backends. "
        "One agents process per shard (8 streams, `--per-message 8`), this process holding "
        f"{worst.edges} edges × {SHARDS} WatchRoutes streams (each edge watches every shard) "
        "and the probe; everything shares this 2-core machine with other work (host load "
        "column). Window, warm-up and propagation are measured as in the single-placement "
        "section above; agents and edges are simulated (raw gRPC streams), placement is real.",
        f"Target — propagation p99 ≤ 1 s at {worst.gpus:,} GPUs with two replicas: "
        f"{_p99(worst)}: **{'met' if worst.timeouts == 0 and p99 <= 1000 else 'missed'}**. "
        f"Ingest there: {100 * kept:.1f} % of offered "
        f"({state}).",
    ]
    one = {lv.gpus: lv for lv in levels if lv.shards == 1}
    for lv in levels:
        b = one.get(lv.gpus)
        if lv.shards == 1 or b is None:
            continue
        out.append(
            f"{lv.gpus:,} GPUs, one placement → {SHARDS} shards in one run: ingest "
            f"{b.ingest_per_s:,.0f} → {lv.ingest_per_s:,.0f} reports/s ({_state(b)} → "
            f"{_state(lv)}), propagation p99 {_p99(b)} → {_p99(lv)}, placement CPU "
            f"{b.cpu_pct[0]:.0f} % → {' + '.join(f'{c:.0f} %' for c in lv.cpu_pct)}.")
    return out


def run(quick: bool, levels: list[int] | None = None, baseline: bool = False,
        before: str | None = None) -> Section:
    """``before``: another checkout (an export of an older commit) whose shards are measured
    right before this checkout's at every level."""
    t0 = time.monotonic()
    levels = levels or ([20000] if quick else [10000, 20000])
    window, changes, timeout = (5.0, 3, 8.0) if quick else (10.0, 8, 15.0)
    out = []
    roots = [("before", before), ("after", ROOT)] if before else [("", ROOT)]
    for gpus in levels:
        if baseline:
            progress(f"controlplane_shards: {gpus:,} GPUs, 100 edges, one placement")
            out.append(ShardedLevel.unsharded(asyncio.run(controlplane.measure(
                gpus, 100, window, changes, streams=8, timeout_s=timeout))))
        for label, root in roots:
            progress(f"controlplane_shards: {gpus:,} GPUs, 100 edges, {SHARDS} shards "
                     f"{label}")
            lv = asyncio.run(measure(gpus, 100, window, changes, timeout, root))
            lv.label = label
            progress(f"controlplane_shards: ingest {lv.ingest_per_s:,.0f}/s of {gpus:,}/s, "
                     f"placement CPU {' + '.join(f'{c:.0f} %' for c in lv.cpu_pct)}, "
                     f"load {lv.load1:.1f}")
            out.append(lv)
    rows = []
    for lv in out:
        d = sorted(lv.delays_ms)
        rows.append([*([lv.label or "one placement"] if before else []),
                     f"{lv.gpus:,}", lv.edges, lv.shards, f"{lv.register_s:.1f}",
                     f"> {WARM_MAX_S:.0f}" if math.isnan(lv.startup_s)
                     else f"{lv.startup_s:.0f}",
                     f"{lv.ingest_per_s:,.0f} / {lv.gpus:,}",
                     " + ".join(f"{c:.0f} %" for c in lv.cpu_pct),
                     f"{lv.agents_cpu_pct:.0f} %", f"{lv.update_mb_per_s:.1f}",
                     percentile(d, 50), percentile(d, 99), f"{len(d)}/{len(d) + lv.timeouts}",
                     f"{lv.load1:.1f}"])
    table = md_table([*(["placement"] if before else []), "GPUs (backends)", "edges",
                      "placement shards", "register all (s)",
                      "start-up s (2 reports per GPU)", "ingest reports/s (sustained / offered)",
                      "placement CPU per shard", "agents CPU", "route bytes to edges MB/s",
                      "propagation p50 ms", "propagation p99 ms", "changes seen by all edges",
                      "host load (1 min)"], rows)
    return Section(title="Control plane scaled out: two placement shards by region",
                   command=command_for(__name__, quick)
                   + f" --levels {','.join(str(g) for g in levels)}"
                   + (" --baseline" if baseline else "")
                   + (" --before <export of the old commit>" if before else ""),
                   table=table, notes=notes(out), elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--levels", default="", help="GPU counts, comma-separated, e.g. 20000")
    p.add_argument("--baseline", action="store_true",
                   help="also measure one unsharded placement at each level, first")
    p.add_argument("--before", default="",
                   help="another checkout (a git archive export of an older commit): its "
                        "shards are measured right before this checkout's at every level")
    args = p.parse_args()
    levels = [int(g) for g in args.levels.split(",")] if args.levels else None
    print(run(args.quick, levels, args.baseline, args.before or None).markdown())


if __name__ == "__main__":
    main()
