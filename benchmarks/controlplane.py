"""Control plane: one real placement process, simulated agents for up to 10,000 GPUs, 100 edges.

    python -m benchmarks.controlplane [--quick]

Per fleet size (1 GPU per backend): a fresh ``python -m services.cli placement`` process
with a generated mesh file; one agents process (grpc.aio) registers every backend with
``RegisterBackend`` and streams one report per backend per second over a few
``StreamTelemetry`` streams (many backends multiplexed per stream); this process opens
``WatchRoutes`` for the edges. Measured while telemetry flows:

- **ingest**: reports placement accepted per second (its own Prometheus counter);
- **CPU**: placement's utime + stime from ``/proc/<pid>/stat`` over the window;
- **propagation**: this process flips one backend's ``backend_ready`` on its own stream,
  then times until *every* watching edge has received a table that shows it (the
  backend's rows dropped with "Triton server not ready", or back again). Edges read the
  raw bytes and look for the probe's row, so the edges' parsing is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from benchmarks.common import (
    ROOT,
    Section,
    command_for,
    cpu_seconds,
    md_table,
    percentile,
    progress,
)
from benchmarks.controlplane_notes import notes
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.ports import free_port

ESTIMATE_S = (70, 330)
REGIONS = [("aws-us-east-1", "aws"), ("aws-us-west-2", "aws"), ("gcp-us-central1", "gcp"),
           ("gcp-europe-west4", "gcp"), ("azure-eastus", "azure")]
MODEL, VARIANT, ACCEL = "chat", "chat-v1", "nvidia-l4"
NOT_READY = b"Triton server not ready"
PROBE = "be-probe0"
INGESTED = "switchyard_placement_telemetry_reports_total"
BACKLOG = "switchyard_placement_route_backlog_backends"  # changed, rows not rebuilt yet
# The simulated Tritons count from the start of the hour (the same in every process).
EPOCH_MS = int(time.time() * 1000) // 3_600_000 * 3_600_000
WARM_MIN_S = 5.0
WARM_MAX_S = float(os.environ.get("CP_WARM_MAX_S", "60"))  # longest wait for a steady state
GRPC_OPTS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def mesh_files(d: pathlib.Path, port: int, metrics_port: int) -> pathlib.Path:
    prices = "".join(f'[[prices]]\naccelerator = "{ACCEL}"\ncloud = "{c}"\nregion = "*"\n'
                     f'price_class = "on-demand"\nusd_per_gpu_hour = 0.80\n'
                     for c in sorted({c for _, c in REGIONS}))
    (d / "prices.toml").write_text(prices)
    regions = "".join(f'[[regions]]\nname = "{r}"\ncloud = "{c}"\n' for r, c in REGIONS)
    mesh = (f'prices_file = "prices.toml"\nrun_dir = "{d}/run"\nbackends = []\n{regions}\n'
            f'[[models]]\nname = "{MODEL}"\ndefault_slo_ms = 500\n'
            f'variants = [{{ name = "{VARIANT}", quality = 0.8 }}]\n\n'
            f'[placement]\nport = {port}\nmetrics_port = {metrics_port}\n')
    path = d / "mesh.toml"
    path.write_text(mesh)
    return path


def backend_pb(i: int | str) -> fleet_pb2.Backend:
    bid = i if isinstance(i, str) else f"be-{i:06d}"
    region, cloud = REGIONS[hash(bid) % len(REGIONS) if isinstance(i, str) else i % len(REGIONS)]
    return fleet_pb2.Backend(
        id=bid, endpoint=f"10.0.0.1:{8000 + (i if isinstance(i, int) else 0) % 50000}",
        cloud=cloud, region=region, accelerator=ACCEL, accelerator_count=1,
        price_class="on-demand", max_concurrency=4,
        variants=[fleet_pb2.VariantRef(logical_model=MODEL, variant=VARIANT, quality=0.8)])


def report(bid: str, tick: int, ready: bool = True) -> telemetry_pb2.TelemetryReport:
    """A busy backend's report: 20 calls/s of ~40 ms, counters read now (as an agent does)."""
    unix_ms = int(time.time() * 1000)
    n = (unix_ms - EPOCH_MS) // 50
    return telemetry_pb2.TelemetryReport(
        backend_id=bid, agent_id="bench-agent",
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED, unix_ms=unix_ms,
        backend_ready=ready, inflight=tick % 3,
        gpus=[telemetry_pb2.GpuReading(index=0, name="NVIDIA L4", gpu_util_pct=40.0,
                                       mem_used_bytes=8 << 30, mem_free_bytes=16 << 30,
                                       mem_total_bytes=24 << 30)],
        models=[telemetry_pb2.ModelStats(variant=VARIANT, inference_count=n, execution_count=n,
                                         success_count=n, queue_ns=n * 1_000_000,
                                         compute_infer_ns=n * (40_000_000 + tick % 7),
                                         ready=True)])


# -- the agents process -------------------------------------------------------------------

def batched(bids: list[str], tick: int, per_message: int
            ) -> list[telemetry_pb2.TelemetryReport]:
    """The reports of ``bids`` as messages of ``per_message`` reports each (one agent's round
    in ``TelemetryReport.more``); ``per_message`` 0 = one report per message, as before."""
    reports = [report(bid, tick) for bid in bids]
    if per_message <= 0:
        return reports
    out = []
    for j in range(0, len(reports), per_message):
        first = reports[j]
        first.more.extend(reports[j + 1:j + per_message])
        out.append(first)
    return out


async def agents_main(address: str, backends: int, streams: int, seconds: float,
                      per_message: int = 0, regions: set[int] | None = None) -> None:
    """``regions``: only the backends in these ``REGIONS`` indexes (one placement shard's,
    ``benchmarks/controlplane_shards.py``); default all."""
    indices = [i for i in range(backends) if regions is None or i % len(REGIONS) in regions]
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTS) as ch:
        stub = placement_pb2_grpc.PlacementStub(ch)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(64)

        async def register(i: int) -> None:
            async with sem:
                await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(
                    backend=backend_pb(i)), timeout=60)

        await asyncio.gather(*(register(i) for i in indices))
        print(json.dumps({"registered": len(indices), "seconds": time.monotonic() - t0}),
              flush=True)
        stop_at = time.monotonic() + seconds
        sent = [0] * streams

        async def stream(k: int) -> int:
            mine = [f"be-{i:06d}" for i in indices[k::streams]]

            async def reports():  # type: ignore[no-untyped-def]
                tick, begin = 0, time.monotonic()
                while time.monotonic() < stop_at:
                    # A fixed 1 Hz schedule; rounds missed while placement held the stream
                    # back are skipped, as a real agent's mailbox keeps only the newest round.
                    tick = max(tick, int(time.monotonic() - begin))
                    start = begin + tick
                    # Each second's reports in 20 steps, whole agents (per_message) per step.
                    batch = max(1, len(mine) // 20)
                    if per_message > 0:
                        batch = max(per_message, batch - batch % per_message)
                    for j in range(0, len(mine), batch):
                        for msg in batched(mine[j:j + batch], tick, per_message):
                            yield msg
                            sent[k] += 1 + len(msg.more)
                        await asyncio.sleep(max(0.0, start + min(1.0, (j + batch) / len(mine))
                                                - time.monotonic()))
                    tick += 1

            ack = await stub.StreamTelemetry(reports(), timeout=seconds + 120)
            return int(ack.accepted)

        accepted = await asyncio.gather(*(stream(k) for k in range(streams)))
        print(json.dumps({"sent": sum(sent), "accepted": sum(accepted)}), flush=True)


# -- edges and probes (this process) ------------------------------------------------------

class Edges:
    """``count`` WatchRoutes streams; records when each last saw the probe ready / not ready."""

    def __init__(self, address: str, count: int) -> None:
        self.address, self.count = address, count
        self.state: list[bool | None] = [None] * count  # probe seen not-ready?
        self.changed_at: list[float] = [0.0] * count
        self.updates = 0
        self.bytes = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.channels: list[grpc.aio.Channel] = []
        self.ended: list[str] = []  # watches that ended (status or error), one line each

    async def start(self) -> None:
        for i in range(self.count):
            ch = grpc.aio.insecure_channel(self.address, options=GRPC_OPTS)
            self.channels.append(ch)
            self.tasks.append(asyncio.create_task(self._watch(i, ch)))

    async def _watch(self, i: int, ch: grpc.aio.Channel) -> None:
        call = ch.unary_stream("/switchyard.v1.Placement/WatchRoutes",
                               request_serializer=placement_pb2.WatchRoutesRequest
                               .SerializeToString, response_deserializer=None)
        req = placement_pb2.WatchRoutesRequest(edge_id=f"edge-{i}",
                                               edge_region=REGIONS[i % len(REGIONS)][0])
        probe = (PROBE + "/").encode()
        try:
            async for raw in call(req):
                now = time.monotonic()
                self.updates += 1
                self.bytes += len(raw)
                at = raw.find(probe)
                if at < 0:
                    continue
                not_ready = raw.find(NOT_READY, at, at + 400) >= 0
                if not_ready != self.state[i]:
                    self.state[i], self.changed_at[i] = not_ready, now
            self.ended.append(f"edge-{i}: stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a watch that died must show, not look like a slow edge
            self.died(i, e, f"watch ended ({'saw' if self.state[i] is not None else 'never saw'}"
                            " the probe)")

    def died(self, i: int, e: Exception, what: str) -> None:
        """Record watch ``i``'s end by error ``e`` (and print it under ``CP_DEBUG``)."""
        why = " ".join(str(e).split())
        self.ended.append(f"edge-{i}: {type(e).__name__}: {why[:400]}")
        if os.environ.get("CP_DEBUG"):
            progress(f"edge-{i} {what}: {why}")

    def seen(self, not_ready: bool) -> str:
        """How far a change got: edges that show it, never saw the probe, watch ended."""
        shows = sum(1 for s in self.state if s == not_ready)
        never = sum(1 for s in self.state if s is None)
        return (f"{shows}/{self.count} edges show it, {never} never saw the probe, "
                f"{len(self.ended)} watches ended{': ' + self.ended[0] if self.ended else ''}")

    async def wait_all(self, not_ready: bool, since: float, limit_s: float) -> float | None:
        deadline = since + limit_s
        while time.monotonic() < deadline:
            if all(s == not_ready for s in self.state):
                return max(self.changed_at) - since
            await asyncio.sleep(0.005)
        return None

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for ch in self.channels:
            await ch.close()


@dataclass
class Level:
    label: str
    gpus: int
    edges: int
    register_s: float
    ingest_per_s: float
    target_per_s: float
    cpu_pct: float
    delays_ms: list[float]
    timeouts: int
    update_mb_per_s: float
    load1: float  # the host's 1-minute load average at the end of the window
    agents_cpu_pct: float = 0.0
    startup_s: float = math.nan  # until 2 reports per backend were ingested (nan: not in time)
    ended: tuple[str, ...] = ()  # watches that ended before the last change, and why


@dataclass(frozen=True)
class Variant:
    """Which placement runs and how the agents send: ``root`` is the checkout placement
    runs from (another worktree measures the code before a change in the same run)."""

    label: str = "this checkout"
    root: str = ROOT
    per_message: int = 8  # reports per StreamTelemetry message (0: one each)


def rate_class(rate: float, offered: float, backlog: float = 0.0) -> str:
    """A 2 s ingest rate: ``over`` offered (a backlog of reports draining), ``building``
    (changed backends' rows not rebuilt yet: start-up's first estimates and rates still
    being pushed), ``steady`` (within 3 %) or ``under`` (placement behind)."""
    if rate > 1.03 * offered:
        return "over"
    if backlog > 0:
        return "building"
    return "steady" if rate >= 0.97 * offered else "under"


def settled(classes: list[str]) -> bool:
    """Two 2 s samples in a row of one class, neither draining nor building: a drain comes in
    bursts (while a paced rebuild runs the rate dips), and the start-up's rows are pushed
    for a while after every backend's second report."""
    return len(classes) >= 2 and classes[-1] == classes[-2] not in ("over", "building")


def _metric(port: int, name: str) -> float:
    # Only the family asked for (``name[]``): a whole scrape renders a cost sample per
    # deployment with placement's GIL held, a fifth of its CPU at 10,000 GPUs when scraped
    # every 2 s while waiting for the steady state (Prometheus scrapes every 15-30 s).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?name[]={name}",
                                timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _probe_stream(stub: placement_pb2_grpc.PlacementStub, states: asyncio.Queue[bool],
                        stop: asyncio.Event) -> None:
    async def reports():  # type: ignore[no-untyped-def]
        tick, ready = 0, True
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                ready = await asyncio.wait_for(states.get(), 1.0)
            tick += 1
            yield report(PROBE, tick, ready)

    await stub.StreamTelemetry(reports())


async def flip_probe(states: asyncio.Queue[bool], watch: Edges, changes: int, timeout_s: float,
                     label: str) -> tuple[list[float], int]:
    """Flip the probe backend's readiness ``changes`` times, 1 s apart; each time wait until
    every stream of ``watch`` saw it. Returns the delays (ms) and how many timed out."""
    delays: list[float] = []
    timeouts, ready = 0, True
    for k in range(changes):
        ready = not ready
        since = time.monotonic()
        await states.put(ready)
        got = await watch.wait_all(not ready, since, timeout_s)
        if got is None:
            timeouts += 1
        else:
            delays.append(got * 1000)
        seen = (f"timeout ({timeout_s:.0f} s; {watch.seen(not ready)})"
                if got is None else f"{got * 1e3:.0f} ms")
        progress(f"{label} change {k + 1}/{changes}: {seen}")
        await asyncio.sleep(1.0)
    return delays, timeouts


async def measure(gpus: int, edges: int, window_s: float, changes: int,
                  streams: int, timeout_s: float = 15.0, variant: Variant = Variant(),
                  make_edges: Callable[[str, int], Edges] = Edges) -> Level:
    """``make_edges``: the simulated edges (``Edges``: WatchRoutes; ``controlplane_ads``:
    delta-ADS clients), given placement's address and their number."""
    with tempfile.TemporaryDirectory(prefix="sy-cp-") as tmp:
        d = pathlib.Path(tmp)
        port, mport = free_port(), free_port()
        cfg = mesh_files(d, port, mport)
        # Blocking open/Popen before anything is measured: nothing else runs on this loop yet.
        log = open(d / "placement.log", "w")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=ROOT)
        # CP_PROFILE=<dir>: placement runs under cProfile (written when it stops).
        prof = os.environ.get("CP_PROFILE")
        argv = [sys.executable, *(["-m", "cProfile", "-o", f"{prof}/{variant.label}-{gpus}"
                                   ".prof"] if prof else []),
                "-m", "services.cli", "--log-level", "warning", "placement",
                "--config", str(cfg)]
        placement = subprocess.Popen(argv, cwd=variant.root,
                                     env=dict(env, PYTHONPATH=variant.root),
                                     stdout=log, stderr=subprocess.STDOUT)
        agents = None
        try:
            address = f"127.0.0.1:{port}"
            async with grpc.aio.insecure_channel(address, options=GRPC_OPTS) as ch:
                await asyncio.wait_for(ch.channel_ready(), 30)
                stub = placement_pb2_grpc.PlacementStub(ch)
                await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(
                    backend=backend_pb(PROBE)))
                run_s = WARM_MAX_S + window_s + changes * (timeout_s + 5.0)
                agents = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.controlplane", "--role", "agents",
                     "--address", address, "--backends", str(gpus), "--streams",
                     str(streams), "--seconds", str(run_s),
                     "--per-message", str(variant.per_message)],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                assert agents.stdout is not None
                line = await asyncio.to_thread(agents.stdout.readline)
                register_s = json.loads(line)["seconds"]
                progress(f"controlplane: {gpus:,} backends registered in {register_s:.1f} s")
                states: asyncio.Queue[bool] = asyncio.Queue()
                stop = asyncio.Event()
                probe_task = asyncio.create_task(_probe_stream(stub, states, stop))
                fleet_edges = make_edges(address, edges)
                await fleet_edges.start()
                # Sustained, not start-up: every backend's first two reports (first estimates,
                # first rates) change its rows; the window opens once that much was ingested.
                started, startup_s = time.monotonic(), math.nan
                while time.monotonic() - started < WARM_MAX_S:
                    # Every 2 s: a scrape renders a sample per deployment (the cost gauge),
                    # placement's GIL held for it; at 0.5 s that was a quarter of its time.
                    await asyncio.sleep(2.0)
                    if (time.monotonic() - started >= WARM_MIN_S
                            and _metric(mport, INGESTED) >= 2 * gpus):
                        startup_s = time.monotonic() - started
                        break
                # ... and once no backlog is draining: reports that waited in transport buffers
                # while placement was behind would count as more than offered.
                classes: list[str] = []
                while time.monotonic() - started < WARM_MAX_S and not settled(classes):
                    n_a, t_a = _metric(mport, INGESTED), time.monotonic()
                    await asyncio.sleep(2.0)
                    classes.append(rate_class(
                        (_metric(mport, INGESTED) - n_a) / (time.monotonic() - t_a), gpus,
                        _metric(mport, BACKLOG)))
                a0 = cpu_seconds(agents.pid)
                c0, n0, t0 = cpu_seconds(placement.pid), _metric(mport, INGESTED), time.monotonic()
                b0 = fleet_edges.bytes
                await asyncio.sleep(window_s)
                c1, n1, t1 = cpu_seconds(placement.pid), _metric(mport, INGESTED), time.monotonic()
                b1 = fleet_edges.bytes
                load1 = os.getloadavg()[0]
                a1 = cpu_seconds(agents.pid)
                delays, timeouts = await flip_probe(states, fleet_edges, changes, timeout_s,
                                                    f"controlplane: {gpus:,} GPUs")
                stop.set()
                ended = tuple(fleet_edges.ended)
                await fleet_edges.stop()
                probe_task.cancel()
            return Level(variant.label, gpus, edges, register_s, (n1 - n0) / (t1 - t0),
                         gpus / 1.0, 100 * (c1 - c0) / (t1 - t0), delays, timeouts,
                         (b1 - b0) / (t1 - t0) / 1e6, load1,
                         100 * (a1 - a0) / (t1 - t0), startup_s, ended)
        finally:
            for p in (agents, placement):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
            log.close()
            if keep := os.environ.get("CP_KEEP_LOGS"):  # placement's log, for a failed run
                shutil.copyfile(d / "placement.log", pathlib.Path(
                    keep, f"placement-{variant.label.replace(' ', '-')}-{gpus}.log"))


def run(quick: bool, levels: list[tuple[int, int]] | None = None,
        before: str | None = None, per_message: int = 8, after: str = ROOT,
        before_per_message: int = 0) -> Section:
    """``before``: another checkout of placement, measured right before this one at every
    level (its agents send ``before_per_message`` reports per message: 0, one each, for a
    placement older than batches)."""
    t0 = time.monotonic()
    levels = levels or ([(1000, 10), (1000, 100)] if quick else
                        [(1000, 10), (1000, 100), (5000, 100), (10000, 100)])
    window, changes, timeout = (5.0, 3, 8.0) if quick else (10.0, 8, 15.0)
    variants = [Variant(root=after, per_message=per_message)]
    if before:
        variants = [Variant("before", before, before_per_message),
                    Variant("after", after, per_message)]
    out = []
    for gpus, edges in levels:
        for v in variants:
            progress(f"controlplane: {gpus:,} GPUs, {edges} edges, {v.label}")
            lv = asyncio.run(measure(gpus, edges, window, changes, streams=8,
                                     timeout_s=timeout, variant=v))
            progress(f"controlplane: ingest {lv.ingest_per_s:,.0f}/s of "
                     f"{lv.target_per_s:,.0f}/s, placement CPU {lv.cpu_pct:.0f} %, "
                     f"agents CPU {lv.agents_cpu_pct:.0f} %, "
                     f"load {lv.load1:.1f}")
            out.append(lv)
    rows = []
    for lv in out:
        d = sorted(lv.delays_ms)
        rows.append([*([lv.label] if before else []), f"{lv.gpus:,}", lv.edges,
                     f"{lv.register_s:.1f}",
                     "> 60" if math.isnan(lv.startup_s) else f"{lv.startup_s:.0f}",
                     f"{lv.ingest_per_s:,.0f} / {lv.target_per_s:,.0f}",
                     f"{lv.cpu_pct:.0f} %", f"{lv.agents_cpu_pct:.0f} %",
                     f"{lv.update_mb_per_s:.1f}",
                     percentile(d, 50), percentile(d, 99),
                     f"{len(d)}/{len(d) + lv.timeouts}", f"{lv.load1:.1f}"])
    table = md_table([*(["placement"] if before else []), "GPUs (backends)", "edges",
                      "register all (s)", "start-up s (2 reports per GPU)",
                      "ingest reports/s (sustained / offered)", "placement CPU",
                      "agents CPU",
                      "route bytes to edges MB/s", "propagation p50 ms", "propagation p99 ms",
                      "changes seen by all edges", "host load (1 min)"], rows)
    return Section(title="Control plane: ingest, placement CPU and route propagation",
                   command=command_for(__name__, quick) + "".join(
                       [f" --levels {','.join(str(g) for g, _ in levels)}"] * bool(levels)
                       + [" --before <worktree of the old commit>"] * bool(before)
                       + [f" --before-per-message {before_per_message}"]
                       * bool(before and before_per_message)
                       + [" --after <worktree of the new commit>"] * (after != ROOT)),
                   table=table,
                   notes=notes(out, WARM_MAX_S), elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--role", default="bench", choices=["bench", "agents"])
    p.add_argument("--address", default="")
    p.add_argument("--backends", type=int, default=1000)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--per-message", type=int, default=8,
                   help="reports per StreamTelemetry message (an 8-GPU node's agent "
                        "batches its round); 0 = one report per message")
    p.add_argument("--levels", default="",
                   help="GPU counts, comma-separated (100 edges each), e.g. 1000,5000,10000")
    p.add_argument("--before", default="",
                   help="another checkout (e.g. a git worktree of the old commit): its "
                        "placement is measured right before this one at every level")
    p.add_argument("--before-per-message", type=int, default=0,
                   help="reports per message for --before's agents (0: one each, for a "
                        "placement older than batches)")
    p.add_argument("--after", default=ROOT,
                   help="the checkout whose placement is measured (default this one; a "
                        "clean worktree keeps others' uncommitted edits out)")
    p.add_argument("--regions", default="",
                   help="agents: only backends in these REGIONS indexes, e.g. 0,2,4")
    args = p.parse_args()
    if args.role == "agents":
        asyncio.run(agents_main(args.address, args.backends, args.streams, args.seconds,
                                args.per_message,
                                {int(r) for r in args.regions.split(",")} if args.regions
                                else None))
        return
    levels = [(int(g), 100) for g in args.levels.split(",")] if args.levels else None
    print(run(args.quick, levels, args.before or None, args.per_message,
              args.after, args.before_per_message).markdown())


if __name__ == "__main__":
    main()
