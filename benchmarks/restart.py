"""Restart quality: how a restarted placement replica routes in its first 10 s (issue 15).

    python -m benchmarks.restart [--quick] [--gpus N]

Two real placement replicas (``start_placement``, in this process, real gRPC on 127.0.0.1):
A runs throughout and is the reference; B is stopped and started again, three ways:

- **cold**: another port, no file, no peer (what a replica on a new machine got before);
- **own file**: the same port and run dir (``persist.py``'s ``placement-<port>.learned.json``,
  saved at stop);
- **peer**: another port, no file, ``peers=[A]`` (``Placement.GetLearnedState``).

The mesh file lists N one-GPU backends of three models in five regions (so every replica,
a cold one too, starts with their registrations); simulated agents (labelled simulated in
their reports) stream each backend's counters once a second to both replicas
(agents fan out to every replica); a backend's compute time and call rate are its own, so
learned estimates differ per backend. Simulated edges (one per region) report observed
p95s and call rates (slot shares) for a fifth of the deployments once a second, to both
replicas, so A sees everything B would. Nothing here is a real GPU or a real edge.

Measured every 0.5 s for 10 s after B's start, on fresh full builds of both replicas' tables
at the same instant: the share of rows on which B differs *materially* from A (the hub's own
rule, ``services.placement.bands.material``: an edge would route differently), and the share
of (model, region, SLO) choices where the cheapest feasible deployment differs. Also: how
long ``start_placement`` took (the peer fetch included) and the time until B's rows stay
equal to A's. "Before" is the same comparison in the steady state before the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import pathlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from benchmarks.common import Section, md_table, progress
from placement.model import Candidate
from services.api.switchyard.v1 import (
    fleet_pb2,
    placement_pb2,
    placement_pb2_grpc,
    telemetry_pb2,
)
from services.config import load_config
from services.placement.bands import material
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port

REGIONS = [("aws-us-east-1", "aws"), ("aws-us-west-2", "aws"), ("gcp-us-central1", "gcp"),
           ("gcp-europe-west4", "gcp"), ("azure-eastus", "azure")]
PRICES = {"aws": 0.80, "gcp": 0.70, "azure": 0.90}
MODELS = [("chat", 500.0), ("code", 800.0), ("embed", 150.0)]  # (name, default SLO ms)
ACCEL = "nvidia-l4"
EPOCH_MS = int(time.time() * 1000) // 3_600_000 * 3_600_000
WINDOW_S, SAMPLE_S, DOWN_S = 10.0, 0.5, 1.0
SCENARIOS = ("cold", "own file", "peer")
EDGES_OBSERVE = 5  # every 5th deployment is observed by the edges
EDGE_EVERY = 2  # edges report every 2 s (services/edge/control.py's report_interval_s)
STEADY_MAX_S = 30.0
DRAINED_EVERY = 20  # an operator drained every 20th backend before the restart


def mesh(d: pathlib.Path, gpus: int) -> pathlib.Path:
    """The mesh file; it lists the backends (``discovery = "static"``), so every replica,
    a cold one included, starts with their registrations."""
    (d / "prices.toml").write_text("".join(
        f'[[prices]]\naccelerator = "{ACCEL}"\ncloud = "{c}"\nregion = "*"\n'
        f'price_class = "on-demand"\nusd_per_gpu_hour = {p}\n' for c, p in PRICES.items()))
    regions = "".join(f'[[regions]]\nname = "{r}"\ncloud = "{c}"\n' for r, c in REGIONS)
    models = "".join(f'[[models]]\nname = "{m}"\ndefault_slo_ms = {slo}\n'
                     f'variants = [{{ name = "{m}-v1", quality = 0.8 }}]\n'
                     for m, slo in MODELS)
    edges = "".join(f'[[edges]]\nid = "edge-{i}"\nregion = "{r}"\nport = {20000 + i}\n'
                    for i, (r, _) in enumerate(REGIONS))
    backends = "".join(
        f'[[backends]]\nid = "{b.id}"\nregion = "{b.region}"\naccelerator = "{ACCEL}"\n'
        f'host = "{b.endpoint.split(":")[0]}"\ngrpc_port = 8001\nmax_concurrency = 4\n'
        f'variants = ["{b.variants[0].variant}"]\n' for b in map(backend, range(gpus)))
    path = d / "mesh.toml"
    path.write_text(f'prices_file = "prices.toml"\nrun_dir = "{d}/run"\n'
                    f'{regions}{models}{edges}{backends}')
    return path


def backend(i: int) -> fleet_pb2.Backend:
    region, cloud = REGIONS[i % len(REGIONS)]
    model = MODELS[(i // len(REGIONS)) % len(MODELS)][0]
    return fleet_pb2.Backend(
        id=f"be-{i:06d}", endpoint=f"10.0.{i // 250}.{i % 250}:8001", cloud=cloud,
        region=region, accelerator=ACCEL, accelerator_count=1, price_class="on-demand",
        max_concurrency=4,
        variants=[fleet_pb2.VariantRef(logical_model=model, variant=f"{model}-v1",
                                       quality=0.8)])


def report(b: fleet_pb2.Backend, i: int, unix_ms: int) -> telemetry_pb2.TelemetryReport:
    """Backend ``i``'s cumulative counters at ``unix_ms``: its own rate and compute time."""
    period_ms = 25 + (i * 37) % 75            # 13-40 calls/s
    compute_ns = (8 + (i * 7919) % 60) * 1_000_000
    n = (unix_ms - EPOCH_MS) // period_ms
    return telemetry_pb2.TelemetryReport(
        backend_id=b.id, agent_id="simulated-agent", unix_ms=unix_ms, backend_ready=True,
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED, inflight=1,
        gpus=[telemetry_pb2.GpuReading(index=0, name="NVIDIA L4 (simulated)",
                                       gpu_util_pct=40.0, mem_used_bytes=8 << 30,
                                       mem_free_bytes=16 << 30, mem_total_bytes=24 << 30)],
        models=[telemetry_pb2.ModelStats(variant=b.variants[0].variant, inference_count=n,
                                         execution_count=n, success_count=n,
                                         queue_ns=n * (i % 5) * 1_000_000,
                                         compute_infer_ns=n * compute_ns, ready=True)])


def observations(backends: list[fleet_pb2.Backend], edge: int
                 ) -> list[telemetry_pb2.Observation]:
    out = []
    for i, b in enumerate(backends):
        if (i + edge) % EDGES_OBSERVE:
            continue
        out.append(telemetry_pb2.Observation(
            deployment_id=f"{b.id}/{b.variants[0].variant}", samples=200,
            p95_ms=30.0 + (i * 13 + edge * 7) % 90,
            rtt_ms=2.0 + 9.0 * ((edge - i) % len(REGIONS)),  # per pair of regions
            calls_per_s=1.0 + (i + edge) % 9))
    return out


class Link:
    """One simulated agent stream to one replica (the mesh file registers the backends);
    when the replica is down, rounds are dropped (an agent does not buffer) and it retries."""

    def __init__(self, address: Callable[[], str]) -> None:
        self.address = address
        self.queue: asyncio.Queue[telemetry_pb2.TelemetryReport] = asyncio.Queue(maxsize=2)
        self.task = asyncio.create_task(self._run())

    def offer(self, batch: telemetry_pb2.TelemetryReport) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(batch)

    async def _run(self) -> None:
        while True:
            try:
                async with grpc.aio.insecure_channel(self.address()) as ch:
                    stub = placement_pb2_grpc.PlacementStub(ch)
                    # A queue per connection: a failed call's request iterator may still be
                    # waiting on its queue, and must not take this connection's rounds.
                    queue = self.queue = asyncio.Queue(maxsize=2)

                    async def rounds() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
                        while True:
                            yield await queue.get()

                    await stub.StreamTelemetry(rounds())
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # the agent's reconnect backoff, not a wait


async def drive(addresses: list[Callable[[], str]], backends: list[fleet_pb2.Backend],
                stop: asyncio.Event) -> None:
    """The simulated agents and edges: one round a second to every replica."""
    links = [Link(a) for a in addresses]
    obs = [observations(backends, e) for e in range(len(REGIONS))]
    tick = 0
    pending: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            tick += 1
            now_ms = int(time.time() * 1000)
            reports = [report(b, i, now_ms) for i, b in enumerate(backends)]
            batch = reports[0]
            batch.more.extend(reports[1:])
            for link in links:
                link.offer(batch)
            for a in addresses if tick % EDGE_EVERY == 0 else ():
                # Each replica's edge reports on their own: a busy replica (a cold one at its
                # first builds) must not hold the other's, nor the agents' rounds.
                pending.add(asyncio.create_task(edges_report(a(), obs)))
            pending = {t for t in pending if not t.done()}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)  # the 1 Hz report interval
    finally:
        for t in [link.task for link in links] + list(pending):
            t.cancel()
        await asyncio.gather(*(link.task for link in links), *pending, return_exceptions=True)


async def edges_report(address: str, obs: list[list[telemetry_pb2.Observation]]) -> None:
    """Every simulated edge's observations to one replica; a replica that is down misses
    them, as a real edge's report to it would."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        async with grpc.aio.insecure_channel(address) as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            await asyncio.gather(*(stub.ReportObservations(telemetry_pb2.ObservationReport(
                edge_id=f"edge-{e}", edge_region=region, observations=obs[e]), timeout=10)
                for e, (region, _) in enumerate(REGIONS)))


def tables(r: RunningPlacement) -> dict[tuple[str, str], list[Candidate]]:
    now = r.service.clock()
    return {(m, reg): r.service.builder.build(m, reg, now) for m, _ in MODELS
            for reg, _ in REGIONS}


def choice(rows: list[Candidate], slo: float) -> str:
    return next((c.deployment_id for c in rows if not c.dropped_reason
                 and c.latency_p95_ms <= slo and c.spare_capacity > 0), "")


def compare(ref: RunningPlacement, b: RunningPlacement,
            differing: set[str] | None = None) -> tuple[float, float]:
    """(share of rows that differ materially, share of choices that differ) at this instant;
    the backends of differing rows are added to ``differing``."""
    ta, tb = tables(ref), tables(b)
    rows = diff = choices = cdiff = 0
    for key, ra in ta.items():
        by_id = {c.deployment_id: c for c in tb.get(key, [])}
        for c in ra:
            rows += 1
            other = by_id.get(c.deployment_id)
            if other is None or material(c, other):
                diff += 1
                if differing is not None:
                    differing.add(c.backend_id)
        slo = dict(MODELS)[key[0]]
        for s in (0.5 * slo, slo, 2 * slo):
            choices += 1
            cdiff += choice(ra, s) != choice(tb.get(key, []), s)
    return diff / max(rows, 1), cdiff / max(choices, 1)


@dataclass
class Run:
    scenario: str
    gpus: int
    before_rows: float = math.nan
    before_choices: float = math.nan
    noise_rows: float = 0.0  # the most rows differing in the steady state before
    last_differing: int = 0  # backends with a differing row at the last sample
    last_differing_drained: int = 0  # ... of which the operator had drained
    last_rated: int = 0  # backends with rates (two reports) at the last sample
    start_s: float = math.nan
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, rows, choices

    def equal_after_s(self) -> float:
        """From B's start until its rows stay equal to A's, up to the steady state's own
        noise (rows of the two replicas caught between one report and the next); nan: not
        within the window."""
        last_bad = max((t for t, r, _ in self.samples if r > self.noise_rows), default=None)
        if last_bad is None:
            return self.samples[0][0] if self.samples else math.nan
        later = [t for t, _, _ in self.samples if t > last_bad]
        return later[0] if later else math.nan


async def drain(replicas: list[RunningPlacement], backends: list[fleet_pb2.Backend]) -> None:
    """An operator's drains, made on every replica (as `switchyard drain` would be)."""
    for r in replicas:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            for b in backends:
                await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
                    scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=b.id,
                    availability=fleet_pb2.AVAILABILITY_DRAINED), timeout=5)


async def steady(a: RunningPlacement, b: RunningPlacement, gpus: int) -> None:
    """Until both replicas have rates for every backend and every edge's observations (the
    steady state the restart is compared against), at most ``STEADY_MAX_S``."""
    observed = sum(1 for e in range(len(REGIONS)) for i in range(gpus)
                   if (i + e) % EDGES_OBSERVE == 0)
    end = time.monotonic() + STEADY_MAX_S

    def ready(r: RunningPlacement) -> bool:
        f = r.service.fleet
        return (len(f.backends) == gpus and all(s.loads for s in f.backends.values())
                and len(f.observed) >= observed)

    while not (ready(a) and ready(b)):
        if time.monotonic() > end:
            raise TimeoutError(f"no steady state within {STEADY_MAX_S:.0f} s: " + "; ".join(
                f"{n}: {len(r.service.fleet.backends)} backends, "
                f"{sum(bool(s.loads) for s in r.service.fleet.backends.values())} with rates, "
                f"{len(r.service.fleet.observed)}/{observed} observations"
                for n, r in (("A", a), ("B", b))))
        await asyncio.sleep(0.2)  # polling a condition, bounded above


async def scenario(name: str, gpus: int, d: pathlib.Path) -> Run:
    cfg = load_config(mesh(d, gpus))
    backends = [backend(i) for i in range(gpus)]
    run = Run(name, gpus)
    port_b = free_port()
    a = await start_placement(cfg, port=0, metrics_port=0, peers=[],
                              learned=d / "a" / "learned.json")
    b: RunningPlacement | None = await start_placement(cfg, port=port_b, metrics_port=0,
                                                       peers=[])
    current: dict[str, str] = {"b": f"127.0.0.1:{port_b}"}
    stop = asyncio.Event()
    driver = asyncio.create_task(drive([lambda: f"127.0.0.1:{a.port}", lambda: current["b"]],
                                       backends, stop))
    try:
        assert b is not None
        await steady(a, b, gpus)
        await drain([a, b], backends[::DRAINED_EVERY])
        before = []
        for _ in range(4):
            before.append(compare(a, b))
            await asyncio.sleep(SAMPLE_S)  # samples spread over 2 s of reports
        run.before_rows = sum(r for r, _ in before) / len(before)
        run.before_choices = sum(c for _, c in before) / len(before)
        run.noise_rows = max(r for r, _ in before)
        await b.stop(0.2)  # saves its file
        b = None
        await asyncio.sleep(DOWN_S)  # the replica's downtime
        port = port_b if name == "own file" else free_port()
        learned = None if name == "own file" else d / f"fresh-{name}" / "learned.json"
        peers = [f"127.0.0.1:{a.port}"] if name == "peer" else []
        t0 = time.monotonic()
        b = await start_placement(cfg, port=port, metrics_port=0, learned=learned,
                                  peers=peers)
        run.start_s = time.monotonic() - t0
        current["b"] = f"127.0.0.1:{port}"
        while (t := time.monotonic() - t0) < WINDOW_S:
            last: set[str] = set()
            rows, choices = compare(a, b, last)
            run.samples.append((t, rows, choices))
            await asyncio.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t0 - t)))
        drained = {x.id for x in backends[::DRAINED_EVERY]}
        run.last_differing, run.last_differing_drained = len(last), len(last & drained)
        run.last_rated = sum(bool(s.loads) for s in b.service.fleet.backends.values())
    finally:
        stop.set()
        await driver
        if b is not None:
            await b.stop(0.2)
        await a.stop(0.2)
    return run


def state_costs(n: int) -> list[str]:
    """One peer state of ``n`` backends with two reports each: its size and what each step of
    a warm start from a peer costs here (dump on the peer's loop, encode on its thread, decode
    and restore on the starting replica), best of 3 runs (the host is shared)."""
    from placement.fleet import FleetState
    from services.convert import backend_from_pb, snapshot_from_pb
    from services.placement import peer, persist

    fleet = FleetState()
    bs = [backend(i) for i in range(n)]
    for b in bs:
        fleet.register(backend_from_pb(b))
    now_ms = int(time.time() * 1000)
    for k in range(2):
        for i, b in enumerate(bs):
            fleet.ingest(b.id, snapshot_from_pb(report(b, i, now_ms + 1000 * k)),
                         time.monotonic())
    best = [math.inf] * 4
    raw = b""
    for _ in range(3):
        t = [time.perf_counter()]
        data = persist.dump(fleet, time.monotonic(), time.time())
        t.append(time.perf_counter())
        raw = peer.encode(data)
        t.append(time.perf_counter())
        with persist.no_gc():
            back = peer.decode(raw)
        t.append(time.perf_counter())
        persist.restore(FleetState(), back, time.monotonic(), time.time())
        t.append(time.perf_counter())
        best = [min(x, b - a) for x, a, b in zip(best, t, t[1:], strict=False)]
    return [f"{n:,}", f"{len(raw) / 1e6:.2f}", *(f"{x:.2f}" for x in best), f"{sum(best):.2f}"]


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def _s(x: float) -> str:
    return "not within 10 s" if math.isnan(x) else f"{x:.1f}"


def run(quick: bool, gpus: int | None = None) -> Section:
    t0 = time.monotonic()
    gpus = gpus or (200 if quick else 1000)
    runs = []
    for name in SCENARIOS:
        progress(f"restart: {gpus:,} GPUs, {name}")
        with tempfile.TemporaryDirectory(prefix="restart-") as d:
            runs.append(asyncio.run(scenario(name, gpus, pathlib.Path(d))))
        r = runs[-1]
        progress(f"restart: {name}: first build {_pct(r.samples[0][1])} rows differ, "
                 f"equal after (s): {_s(r.equal_after_s())}")
    rows = []
    for r in runs:
        first = r.samples[0]
        mean_rows = sum(x for _, x, _ in r.samples) / len(r.samples)
        mean_choices = sum(x for _, _, x in r.samples) / len(r.samples)
        rows.append([r.scenario, f"{r.gpus:,}", _pct(r.before_rows), f"{r.start_s:.2f}",
                     _pct(first[1]), _pct(mean_rows), _pct(first[2]), _pct(mean_choices),
                     _s(r.equal_after_s())])
    table = md_table(["restart from", "GPUs (backends)", "rows differing before",
                      "start-up s (incl. fetch)", "rows differing at first build",
                      "rows differing, mean of first 10 s", "choices differing at first build",
                      "choices differing, mean of first 10 s",
                      "s until rows stay equal"], rows)
    return Section(title="Control plane: routing quality after a replica restart",
                   command="python -m benchmarks.restart" + (" --quick" if quick else "")
                   + (f" --gpus {gpus}" if gpus not in (200, 1000) else ""),
                   table=table, notes=[*notes(runs), *costs(quick)],
                   elapsed_s=time.monotonic() - t0)


def costs(quick: bool) -> list[str]:
    sizes = (1000, 10000)  # a few seconds: the same in both modes
    rows = []
    for n in sizes:
        progress(f"restart: peer state of {n:,} backends")
        rows.append(state_costs(n))
    return ["#### What a warm start from a peer costs by fleet size (the state alone, no "
            "gRPC; best of 3 runs on this shared host)\n",
            md_table(["backends", "state MB (zlib JSON)", "dump s (peer's loop)",
                      "encode s (peer's thread)", "decode s", "restore s",
                      "total s"], rows),
            f"At {rows[-1][0]} backends the state is {rows[-1][1]} MB and the steps take "
            f"{rows[-1][-1]} s in all, {'within' if float(rows[-1][-1]) <= 2.0 else 'over'} "
            "the 2 s target before the first build."]


def notes(runs: list[Run]) -> list[str]:
    out = [
        "Two real placement replicas in one process, real gRPC; simulated agents (1 report "
        "per backend per second, fanned out to both replicas) and simulated edges (one per "
        "region, observed p95 and call rates on a fifth of the deployments, to both); an "
        f"operator drained every {DRAINED_EVERY}th backend on both replicas before the "
        "restart. A row "
        "differs when the hub would push it (`services.placement.bands.material`: an estimate "
        f"out of its noise band, or any other field); a choice is the cheapest feasible "
        f"deployment per model, edge region and SLO (0.5x, 1x, 2x the model's default). "
        f"Sampled every {SAMPLE_S} s for {WINDOW_S:.0f} s after the restarted replica's "
        f"start; it was down {DOWN_S:.0f} s.",
    ]
    by = {r.scenario: r for r in runs}
    for r in runs:
        first, equal = r.samples[0], r.equal_after_s()
        out.append(f"{r.scenario}: at its first build {_pct(first[1])} of rows and "
                   f"{_pct(first[2])} of choices differ from the running replica's "
                   f"(steady state before: {_pct(r.before_rows)} / "
                   f"{_pct(r.before_choices)}); "
                   + (f"its rows stay equal from {equal:.1f} s after start"
                      if not math.isnan(equal) else
                      f"its rows are not equal within {WINDOW_S:.0f} s")
                   + (f" (at the last sample, {r.last_differing:,} backends' rows differ, "
                      f"{r.last_differing_drained:,} of them drained by the operator before "
                      f"the restart; {r.last_rated:,} of {r.gpus:,} backends had rates "
                      "from reports again)."
                      if r.last_differing else "."))
    peer = by.get("peer")
    if peer is not None:
        equal = peer.equal_after_s()
        met = not math.isnan(equal) and equal <= 2.0
        out.append("Target — a restarted replica's tables equal to its peer's within 2 s "
                   f"(peer restart, another port, no file): "
                   f"{'not within the window' if math.isnan(equal) else f'{equal:.1f} s'}"
                   f": **{'met' if met else 'not met'}**.")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="200 GPUs instead of 1,000 (on a shared 2-core host, 1,000 GPUs fed to "
                        "two replicas in one process leave the reports seconds behind)")
    p.add_argument("--gpus", type=int, default=None)
    args = p.parse_args()
    print(run(args.quick, args.gpus).markdown())


if __name__ == "__main__":
    main()
