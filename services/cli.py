"""``switchyard``: run and operate the mesh.

    switchyard up [--demo]          run the embedded mesh (placement, edges, Triton backends)
    switchyard status               backends, health, telemetry source and route tables
    switchyard explain MODEL        why each deployment would or would not serve a call
                                    (--stream: an LLM stream, asked of an edge)
    switchyard drain KIND TARGET    drain (or --undo) a backend, region or cloud
    switchyard plan [--approve]     capacity plan: current vs proposed, $/hour, why
    switchyard demo                 mixed tight/loose SLO workload vs an always-fastest baseline
    switchyard drill SCENARIO       failover drill under load (kill-backend, region-outage, …)
    switchyard placement | edge | agent   run one placement replica / edge router / node agent
    switchyard certs                a development CA and certificates for [security]

Exit codes: 0 done, 1 a drill that failed or no plan to approve, 2 a bad config, flag or path, 3
placement or an edge unreachable or refusing. `switchyard COMMAND --help`: flags, defaults
and examples.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import structlog

from placement.errors import ConfigError, InvalidRequest, SwitchyardError
from services.cli_errors import Unreachable, rpc_error_message
from services.cli_explain import cmd_explain
from services.cli_help import DEFAULT_CONFIG, try_line, up_command
from services.cli_parser import build_parser
from services.cli_placement import load_mesh, placement_stub, transport_mismatch
from services.cli_preflight import check_edges_answer, check_free
from services.config import MeshConfig
from services.logs import configure
from services.render import STATUS_LEGEND
from services.serving import exit_on_sigterm


def cmd_placement(args: argparse.Namespace) -> int:
    from services.placement.main import start_placement
    from services.serving import run, wait_for_signal

    cfg = load_mesh(args)
    port = cfg.placement.port if args.port is None else args.port
    if port:  # a port another process holds: said, not grpc's RuntimeError traceback
        check_free("placement.port" if args.port is None else "--port", cfg.placement.host,
                   port, args.config)

    async def main() -> None:
        running = await start_placement(cfg, port=args.port,
                                        shard_address=args.shard_address or None)
        await wait_for_signal()
        await running.stop()

    run(main(), cfg.edge.uvloop)
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from services.edge.main import start_edge
    from services.serving import run, wait_for_signal

    cfg = load_mesh(args)
    edge = next((e for e in cfg.edges if e.id == args.id), None)
    if edge is None:
        raise ConfigError(f"--id {args.id!r} is not in edges {[e.id for e in cfg.edges]}")
    port = edge.port if args.port is None else args.port
    if port:
        check_free(f"edges {edge.id!r} port" if args.port is None else "--port", edge.host,
                   port, args.config)

    async def main() -> None:
        running = await start_edge(cfg, edge, port=args.port,
                                   placement=args.placement.split(",") if args.placement
                                   else None)

        def reload() -> None:  # SIGHUP: re-read the file, apply tenant policies
            try:
                running.reload_policies(load_mesh(args))
            except SwitchyardError as exc:  # a log line like the process's others: JSON
                structlog.get_logger("switchyard.edge").warning(
                    "policies_reload_refused", error=exc.message,
                    message="reload refused, keeping the old policies")

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        await wait_for_signal()
        await running.stop(grace=5.0, drain_s=cfg.edge.drain_s)

    run(main(), cfg.edge.uvloop)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from services.cli_preflight import check_up  # run_dir, ports
    from services.up import Mesh

    cfg = load_mesh(args)
    check_up(cfg, args.config)
    exit_on_sigterm()  # SIGTERM, like Ctrl-C, stops the mesh this command starts
    mesh = Mesh(cfg, args.config)
    print(f"Switchyard: starting the embedded mesh from {args.config} "
          f"(logs in {mesh.run_dir / 'logs'})")
    if cfg.wan.emulate:
        print("  note: inter-region RTT is EMULATED by a user-space delaying relay; "
              "accelerator speed is EMULATED (CPU-only machine)")
    try:  # a Ctrl-C or SIGTERM while it starts stops what had started
        mesh.start()
        mesh.supervise()  # a child that dies is reported and restarted (unless stopped on purpose)
        print("\nmesh is up:")
        print("\n".join(mesh.placement_lines()))
        engine = "; an Envoy, [edge] engine" if cfg.edge.engine == "envoy" else ""
        for e in cfg.edges:
            print(f"  edge        {e.host}:{e.port}  region {e.region}  (KServe v2 / Triton "
                  f"gRPC{engine})")
        print(try_line(args.config, cfg.models[0].name if cfg.models else "MODEL",
                       cfg.edges[0].region if cfg.edges else ""))
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


def cmd_status(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import placement_pb2, telemetry_pb2
    from services.render import GPU_HEADERS, backend_rows, gpu_rows, route_rows, table
    from services.stream_explain import token_section

    cfg = load_mesh(args)
    if cfg.placement.shards and not args.placement:  # one section per shard (issue 15)
        from services.up import shard_targets

        silent = 0
        for title, address in shard_targets(cfg):
            print(title)
            if address is None:
                silent += 1
            else:
                args.placement = address
                cmd_status(args)
        if silent:  # a shard nobody answers for is not a healthy status (exit code 3)
            print(f"switchyard: {silent} of {len(cfg.placement.shards)} placement shards have "
                  "no replica answering (listed above).\n  next: is the mesh running? Start "
                  f"it with `{up_command(args.config)}`, or start the shard's replicas (`switchyard "
                  "placement --port PORT`)", file=sys.stderr)
            return 3
        return 0
    stub = placement_stub(cfg, args)
    backends = stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=3)
    print(f"placement {backends.placement_id}  fleet version {backends.version}\n")
    print(table(["backend", "region", "accelerator", "class", "availability", "healthy",
                 "telemetry", "telemetry owner", "health / penalty"],
                backend_rows(backends, telemetry_pb2)))
    gpus = gpu_rows(backends, telemetry_pb2)
    print("\nGPUs (last report of each backend's telemetry owner)")
    print(table(GPU_HEADERS, gpus) if gpus else "  no GPU readings reported yet")
    from services.capacity.plan_view import status_section

    print("\n" + status_section(backends, args.placement_address, cfg.security))
    routes = stub.GetRouteTables(placement_pb2.GetRouteTablesRequest(), timeout=3)
    for t in routes.tables:
        print(f"\nroute table {t.model} @ {t.edge_region} (version {t.version}, "
              f"default SLO {t.default_slo_ms:.0f} ms)")
        print(table(["deployment", "region", "p95 ms", "rtt ms", "compute ms", "$/1k calls",
                     "spare rps", "edge slots", "dropped / penalty"], route_rows(t)))
        if tokens := token_section(t):  # issue 14: what placement learned of LLM streams
            print("\n" + tokens)
    if not args.no_legend:
        print("\n" + STATUS_LEGEND)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from services.capacity.plan_view import again_command, plan_main

    cfg = load_mesh(args)
    if cfg.placement.shards and not args.placement:  # [placement]'s address is no replica's
        return _plan_per_shard(cfg, args)
    placement_stub(cfg, args)  # resolves args.placement_address
    try:
        return plan_main(args.placement_address, args.replan, args.approve,
                         again_command(args.config, args.placement), cfg.security)
    except grpc.RpcError as exc:  # was "UNIMPLEMENTED: Method not found!, see the log"
        if not (isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED):
            raise
        raise Unreachable(
            f"placement at {args.placement_address} runs no capacity loop (started from a "
            "config with [capacity] enabled = false, the default).\n  next: run a mesh with "
            "it on and name its config, e.g. `switchyard up --config "
            "examples/mesh-capacity.toml`, then `switchyard plan --config "
            "examples/mesh-capacity.toml`") from exc


def _plan_per_shard(cfg: MeshConfig, args: argparse.Namespace) -> int:
    """``plan`` with ``[[placement.shards]]``: each shard's answer, as ``status`` shows them
    (it asked ``[placement]``'s host:port, which no shard lists: "cannot reach placement, is
    the mesh running?" of a running mesh); a change names its replica."""
    from services.up import shard_targets

    if args.replan or args.approve is not None:
        raise InvalidRequest(
            "with placement.shards, --replan and --approve go to one replica: name it with "
            "--placement HOST:PORT (" + "; ".join(
                f"shards[{i}]: {', '.join(s.replicas)}"
                for i, s in enumerate(cfg.placement.shards)) + ")")
    code = 0
    for title, address in shard_targets(cfg):
        print(title)
        if address is None:
            code = 3
            continue
        args.placement = address
        code = max(code, cmd_plan(args))
    return code


def cmd_drain(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import fleet_pb2, placement_pb2

    cfg = load_mesh(args)
    known = {"region": sorted(r.name for r in cfg.regions),  # a backend may be registered
             "cloud": sorted({r.cloud for r in cfg.regions})}.get(args.kind)  # by Consul
    if known is not None and args.target not in known:  # said here, placement running or not
        raise InvalidRequest(f"{args.kind} {args.target!r} is not a {args.kind} of "
                             f"{args.config}; known: {', '.join(known)}")
    if cfg.placement.shards and not args.placement:  # the shard(s) owning it (issue 15)
        from services.placement.shard import owning_shards
        from services.up import answering_replica

        for i in owning_shards(cfg, args.kind, args.target):
            args.placement = answering_replica(cfg, i)
            cmd_drain(args)
        return 0
    scope = {"backend": placement_pb2.AVAILABILITY_SCOPE_BACKEND,
             "region": placement_pb2.AVAILABILITY_SCOPE_REGION,
             "cloud": placement_pb2.AVAILABILITY_SCOPE_CLOUD}[args.kind]
    state = (fleet_pb2.AVAILABILITY_ACTIVE if args.undo else
             fleet_pb2.AVAILABILITY_CORDONED if args.cordon else fleet_pb2.AVAILABILITY_DRAINED)
    resp = placement_stub(cfg, args).SetAvailability(placement_pb2.SetAvailabilityRequest(
        scope=scope, target=args.target, availability=state), timeout=3)
    print(f"{fleet_pb2.Availability.Name(state)}: {', '.join(resp.backend_ids)} "
          f"(routes version {resp.version})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    cfg = load_mesh(args)
    check_edges_answer(cfg, up_command(args.config))
    run_demo(cfg, calls=args.calls)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from services.drills.cli import drill_main

    return drill_main(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from services.agent.cli import run as agent_run

    return agent_run(args)


def parser() -> argparse.ArgumentParser:
    return build_parser((__doc__ or "").replace("``", ""), {  # --help is no reST
        "up": cmd_up, "placement": cmd_placement, "edge": cmd_edge, "drill": cmd_drill,
        "agent": cmd_agent, "status": cmd_status, "explain": cmd_explain, "drain": cmd_drain,
        "plan": cmd_plan, "demo": cmd_demo})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        return int(args.fn(args))
    except SwitchyardError as exc:
        print(f"switchyard: {exc.message}", file=sys.stderr)
        return 2
    except Unreachable as exc:  # an edge or replica that does not answer: exit code 3
        print(f"switchyard: {exc.message}", file=sys.stderr)
        return 3
    except grpc.RpcError as exc:
        target = getattr(args, "rpc_target", "placement")
        asked = getattr(args, "placement_address", "")
        print(rpc_error_message(exc, target,
                                getattr(args, "rpc_elsewhere", "") or "point at a running "
                                "replica with --placement host:port",
                                up_command(getattr(args, "config", DEFAULT_CONFIG)),
                                handshake=(lambda: transport_mismatch(
                                    asked, getattr(args, "security", None)))
                                if asked and target.startswith(f"placement at {asked}")
                                else None),
              file=sys.stderr)
        return 3
    except OSError as exc:
        if exc.filename is None:  # not a path the operator gave: a bug, keep its traceback
            raise
        print(f"switchyard: {exc.filename}: {exc.strerror}\n  next: check that the path "
              "(--config, --dir, --json, run_dir) exists, is a file or a directory as needed, "
              "and can be written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())


