"""What every Switchyard gRPC server shares: health, reflection, metrics endpoint, lifecycle."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

T = TypeVar("T")


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]
                              ) -> health.aio.HealthServicer:
    """gRPC health (every service SERVING) and server reflection, so grpcurl `list` works."""
    names = list(service_names)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer, names: Iterable[str]) -> None:
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    for n in names:
        await servicer.set(n, health_pb2.HealthCheckResponse.SERVING)


def start_metrics(port: int, host: str, registry: CollectorRegistry) -> int:
    """Serve /metrics for Prometheus; port 0 = do not serve. Returns the port."""
    if port:
        start_http_server(port, addr=host, registry=registry)
    return port


def bind(server: grpc.aio.Server, host: str, port: int) -> int:
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}: is another process using it? "
                      "Pick another port in the config.")
    return bound


def exit_on_sigterm() -> None:
    """Make SIGTERM an exit that unwinds (``SystemExit(143)``), so a command's ``finally``
    stops the processes it started. By default SIGTERM ends Python at once, and the mesh's
    children, each in its own session, outlive it (a drill's private mesh left running).
    An asyncio loop's own handler (:func:`wait_for_signal`) takes over while it runs; a
    Python-level handler is not inherited by the children a command spawns."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():  # (tests call commands in threads)
        signal.signal(signal.SIGTERM, _exit)


async def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run a process's main coroutine, on uvloop when asked and importable."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)
