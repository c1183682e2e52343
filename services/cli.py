"""``switchyard``: run and operate the mesh.

    switchyard up [--demo]          run the embedded mesh (placement, edges, Triton backends)
    switchyard status               backends, health, telemetry source and route tables
    switchyard explain MODEL        why each deployment would or would not serve a call
    switchyard drain KIND TARGET    drain (or --undo) a backend, region or cloud
    switchyard demo                 mixed tight/loose SLO workload vs an always-fastest baseline
    switchyard drill SCENARIO       failover drill under load (kill-backend, region-outage, …)
    switchyard placement | edge | agent   run one placement replica / edge router / node agent
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import grpc

from placement.errors import ConfigError, SwitchyardError
from services.config import MeshConfig, load_config
from services.logs import configure

DEFAULT_CONFIG = "examples/mesh.toml"


def _load(args: argparse.Namespace) -> MeshConfig:
    return load_config(args.config, env=dict(os.environ))


def cmd_placement(args: argparse.Namespace) -> int:
    from services.placement.main import start_placement
    from services.serving import run, wait_for_signal

    cfg = _load(args)

    async def main() -> None:
        running = await start_placement(cfg, port=args.port)
        await wait_for_signal()
        await running.stop()

    run(main(), cfg.edge.uvloop)
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from services.edge.main import start_edge
    from services.serving import run, wait_for_signal

    cfg = _load(args)
    edge = next((e for e in cfg.edges if e.id == args.id), None)
    if edge is None:
        raise ConfigError(f"--id {args.id!r} is not in edges {[e.id for e in cfg.edges]}")

    async def main() -> None:
        running = await start_edge(cfg, edge, port=args.port,
                                   placement=args.placement.split(",") if args.placement
                                   else None)

        def reload() -> None:  # SIGHUP: re-read the file, apply tenant policies
            try:
                running.reload_policies(_load(args))
            except SwitchyardError as exc:
                print(f"switchyard edge: reload refused, keeping the old policies: "
                      f"{exc.message}", file=sys.stderr)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        await wait_for_signal()
        await running.stop(grace=5.0, drain_s=cfg.edge.drain_s)

    run(main(), cfg.edge.uvloop)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from services.up import Mesh

    cfg = _load(args)
    mesh = Mesh(cfg, args.config)
    print(f"Switchyard: starting the embedded mesh from {args.config} "
          f"(logs in {mesh.run_dir / 'logs'})")
    if cfg.wan.emulate:
        print("  note: inter-region RTT is EMULATED by a user-space delaying relay; "
              "accelerator speed is EMULATED (CPU-only machine)")
    mesh.start()
    mesh.supervise()  # a child that dies is reported and restarted (unless stopped on purpose)
    try:
        print("\nmesh is up:")
        print(f"  placement   {cfg.placement.host}:{cfg.placement.port}")
        for e in cfg.edges:
            print(f"  edge        {e.host}:{e.port}  region {e.region}  (KServe v2 / Triton gRPC)")
        print("  try: switchyard status | switchyard explain summarize --region "
              f"{cfg.edges[0].region if cfg.edges else ''}")
        if args.demo:
            from services.demo import run_demo

            run_demo(cfg, calls=args.calls)
        if args.exit_after_demo:
            return 0
        print("\nCtrl-C stops the mesh.")
        from services.serving import run, wait_for_signal

        run(wait_for_signal(), False)
        return 0
    finally:
        print("stopping the mesh…", flush=True)
        mesh.stop()


def _stub(cfg: MeshConfig, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.api.switchyard.v1 import placement_pb2_grpc

    address = args.placement or f"{cfg.placement.host}:{cfg.placement.port}"
    return placement_pb2_grpc.PlacementStub(grpc.insecure_channel(address))


def cmd_status(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import placement_pb2, telemetry_pb2
    from services.render import backend_rows, route_rows, table

    cfg = _load(args)
    stub = _stub(cfg, args)
    backends = stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=3)
    print(f"placement {backends.placement_id}  fleet version {backends.version}\n")
    print(table(["backend", "region", "accelerator", "class", "availability", "healthy",
                 "telemetry", "health / penalty"], backend_rows(backends, telemetry_pb2)))
    routes = stub.GetRouteTables(placement_pb2.GetRouteTablesRequest(), timeout=3)
    for t in routes.tables:
        print(f"\nroute table {t.model} @ {t.edge_region} (version {t.version}, "
              f"default SLO {t.default_slo_ms:.0f} ms)")
        print(table(["deployment", "region", "p95 ms", "rtt", "compute", "$/1k calls",
                     "spare rps", "edge slots", "dropped / penalty"], route_rows(t)))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import placement_pb2
    from services.render import explain_rows, table

    cfg = _load(args)
    region = args.region or (cfg.edges[0].region if cfg.edges else cfg.regions[0].name)
    resp = _stub(cfg, args).Explain(placement_pb2.ExplainRequest(
        model=args.model, edge_region=region, slo_ms=args.slo_ms or 0,
        min_quality=args.min_quality, max_cost_usd=args.max_cost_usd or None,
        allowed_regions=args.allowed_regions.split(",") if args.allowed_regions else []),
        timeout=3)
    print(f"{resp.model} from {resp.edge_region}, SLO {resp.slo_ms:.0f} ms: {resp.summary}\n")
    print(table(["deployment", "region", "quality", "p95 ms", "$/1k calls", "feasible", "why"],
                explain_rows(resp)))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import fleet_pb2, placement_pb2

    cfg = _load(args)
    scope = {"backend": placement_pb2.AVAILABILITY_SCOPE_BACKEND,
             "region": placement_pb2.AVAILABILITY_SCOPE_REGION,
             "cloud": placement_pb2.AVAILABILITY_SCOPE_CLOUD}[args.kind]
    state = (fleet_pb2.AVAILABILITY_ACTIVE if args.undo else
             fleet_pb2.AVAILABILITY_CORDONED if args.cordon else fleet_pb2.AVAILABILITY_DRAINED)
    resp = _stub(cfg, args).SetAvailability(placement_pb2.SetAvailabilityRequest(
        scope=scope, target=args.target, availability=state), timeout=3)
    print(f"{fleet_pb2.Availability.Name(state)}: {', '.join(resp.backend_ids)} "
          f"(routes version {resp.version})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    run_demo(_load(args), calls=args.calls)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from services.drills.cli import drill_main

    return drill_main(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from services.agent.cli import run as agent_run

    return agent_run(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"mesh TOML file (default: {DEFAULT_CONFIG})")
        sp.set_defaults(fn=fn)
        return sp

    up = add("up", cmd_up, "run the embedded mesh: Triton backends, WAN relay, placement, "
                           "agent, edges")
    up.add_argument("--demo", action="store_true", help="run the demo workload once it is up")
    up.add_argument("--calls", type=int, default=400, help="demo calls per run (default 400)")
    up.add_argument("--exit-after-demo", action="store_true",
                    help="stop the mesh after the demo instead of waiting for Ctrl-C")
    pl = add("placement", cmd_placement, "run one placement replica")
    pl.add_argument("--port", type=int, default=None, help="override [placement] port")
    ed = add("edge", cmd_edge, "run one edge router")
    ed.add_argument("--id", required=True, help="edge id from [[edges]]")
    ed.add_argument("--port", type=int, default=None, help="override the edge's port")
    ed.add_argument("--placement", default="", help="placement replicas host:port,… "
                                                    "(default: from the config)")
    from services.drills.cli import add_arguments as drill_arguments

    drill_arguments(add("drill", cmd_drill, "failover drill: break part of a (private, by "
                                            "default) mesh under load and report what callers "
                                            "saw"))
    ag = add("agent", cmd_agent, "run the node agent for some backends (NVML, or labelled "
                                 "simulated telemetry without a GPU)")
    from services.agent.cli import add_arguments as agent_arguments

    agent_arguments(ag)
    for name, fn, help_ in (("status", cmd_status, "show backends, health and route tables"),
                            ("explain", cmd_explain, "explain the routing of one call"),
                            ("drain", cmd_drain, "drain, cordon or restore a backend, "
                                                 "region or cloud"),
                            ("demo", cmd_demo, "run the demo workload against a running mesh")):
        sp = add(name, fn, help_)
        if name != "demo":
            sp.add_argument("--placement", default="", help="placement host:port "
                                                            "(default: from the config)")
        if name == "explain":
            sp.add_argument("model")
            sp.add_argument("--region", default="", help="edge region (default: first edge's)")
            sp.add_argument("--slo-ms", type=float, default=0.0)
            sp.add_argument("--min-quality", type=float, default=0.0)
            sp.add_argument("--max-cost-usd", type=float, default=0.0)
            sp.add_argument("--allowed-regions", default="")
        if name == "drain":
            sp.add_argument("kind", choices=["backend", "region", "cloud"])
            sp.add_argument("target")
            sp.add_argument("--undo", action="store_true", help="make it active again")
            sp.add_argument("--cordon", action="store_true",
                            help="cordon instead of drain: used only when nothing else can")
        if name == "demo":
            sp.add_argument("--calls", type=int, default=400)
    from services.security.certs import add_parser as certs_parser

    certs_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        return int(args.fn(args))
    except SwitchyardError as exc:
        print(f"switchyard: {exc.message}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"switchyard: {exc.code().name}: {exc.details()} — is the mesh running? "  # type: ignore[attr-defined]
              "Start it with `switchyard up`.", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())


