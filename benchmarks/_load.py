"""A bounded closed-loop load with ``tritonclient.grpc.aio``: the same for every target.

``concurrency`` tasks each send ModelInfer calls back to back; the point stops at ``calls``
completed calls or ``seconds``, whichever comes first. Connections: ``min(concurrency, 8)``
client channels, each with its own subchannel pool, so there are that many TCP connections
(one connection would pin every call to one SO_REUSEPORT worker). The CPU of the proxy
processes is read from /proc before and after the measured window (warm-up excluded).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import InferInput, InferRequestedOutput

from benchmarks.common import cpu_seconds, cpu_seconds_all, percentile

MAX_CONNECTIONS = 8


def schedstat_seconds(pid: int) -> float:
    """CPU time of a process's live threads from ``/proc/<pid>/task/*/schedstat`` (ns
    resolution, where ``/proc/<pid>/stat`` counts 10 ms ticks). Threads that exit in the
    window are not counted: for processes with a fixed set of threads (Envoy, nginx)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


@dataclass
class Point:
    target: str
    concurrency: int
    calls: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    proxy_cpu_us: float  # per call, all proxy processes together (NaN: no proxy)
    backend_cpu_us: float  # Triton's CPU per call, for context
    cpu_split: str = ""  # per-process share, e.g. "52/48" for two workers


def _inputs() -> tuple[list[InferInput], list[InferRequestedOutput]]:
    inp = InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.random.default_rng(0).standard_normal((1, 16), np.float32))
    return [inp], [InferRequestedOutput("OUTPUT0")]


async def _run(address: str, model: str, concurrency: int, calls: int, seconds: float,
               warmup: int, pids: Sequence[int], backend_pids: Sequence[int],
               cpu_of: Callable[[int], float] = cpu_seconds,
               ) -> tuple[list[float], int, float, list[float], float]:
    n_conn = min(concurrency, MAX_CONNECTIONS)
    clients = [aioclient.InferenceServerClient(
        address, channel_args=[("grpc.use_local_subchannel_pool", 1),
                               ("grpc.max_receive_message_length", 64 << 20)])
        for _ in range(n_conn)]
    inputs, outputs = _inputs()
    try:
        # Warm-up: every connection, then `warmup` calls at the point's concurrency.
        await asyncio.gather(*(c.infer(model, inputs, outputs=outputs) for c in clients))
        await _loop(clients, model, inputs, outputs, concurrency, warmup, 30.0, [], [0])
        cpu0 = [cpu_of(p) for p in pids]
        b0 = cpu_seconds_all(backend_pids)
        lat: list[float] = []
        errors = [0]
        t0 = time.perf_counter()
        await _loop(clients, model, inputs, outputs, concurrency, calls, seconds, lat, errors)
        elapsed = time.perf_counter() - t0
        cpu = [cpu_of(p) - c for p, c in zip(pids, cpu0, strict=True)]
        b = cpu_seconds_all(backend_pids) - b0
        return lat, errors[0], elapsed, cpu, b
    finally:
        for c in clients:
            await c.close()


async def _loop(clients: list[aioclient.InferenceServerClient], model: str,
                inputs: list[InferInput], outputs: list[InferRequestedOutput],
                concurrency: int, calls: int, seconds: float, lat: list[float],
                errors: list[int]) -> None:
    deadline = time.perf_counter() + seconds
    issued = 0

    async def worker(i: int) -> None:
        nonlocal issued
        client = clients[i % len(clients)]
        clock = time.perf_counter
        while issued < calls and clock() < deadline:
            issued += 1
            t = clock()
            try:
                await client.infer(model, inputs, outputs=outputs, client_timeout=30.0)
            except Exception:
                errors[0] += 1
                continue
            lat.append(clock() - t)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


def measure(target: str, address: str, model: str, concurrency: int, calls: int,
            seconds: float, pids: Sequence[int], backend_pids: Sequence[int] = (),
            warmup: int = 200, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
            = None, cpu_of: Callable[[int], float] = cpu_seconds) -> Point:
    """One bounded point against ``address``; ``pids`` are the proxy processes to bill,
    ``cpu_of`` how (default: utime+stime ticks, which include exited threads)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lat, errors, elapsed, cpu, bcpu = runner.run(
            _run(address, model, concurrency, calls, seconds, warmup, pids, backend_pids,
                 cpu_of))
    lat.sort()
    n = len(lat)
    total_cpu = sum(cpu)
    split = "/".join(f"{100 * c / total_cpu:.0f}" for c in cpu) if len(cpu) > 1 and total_cpu \
        else ""
    return Point(target, concurrency, n, errors, elapsed, n / elapsed if elapsed else 0.0,
                 percentile(lat, 50) * 1000, percentile(lat, 99) * 1000,
                 total_cpu / n * 1e6 if pids and n else float("nan"),
                 bcpu / n * 1e6 if backend_pids and n else float("nan"), split)
