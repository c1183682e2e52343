"""The node agent: registers this host's Triton backends with placement and streams telemetry.

One ``NodeAgent`` per host. On :meth:`NodeAgent.start` it picks its GPU source once — NVML
when ``nvmlInit`` works, otherwise the explicitly simulated source (logged loudly, and
every report says ``TELEMETRY_SOURCE_SIMULATED``). Then it loops:

1. connect to the next placement replica, ``RegisterBackend`` every backend;
2. open ONE ``StreamTelemetry`` client stream and write one ``TelemetryReport`` per backend
   every ``interval_s``;
3. when a call fails or the stream breaks, back off exponentially with jitter (capped at
   ``max_backoff_s``), move to the next replica, and start again at 1 — re-registering,
   because a restarted placement rebuilds its fleet from registrations.

The clock, the sleep, the random source, the channel factory, pynvml and the Triton
statistics readers are all injected, so tests run it against in-process fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import structlog

from placement.errors import ConfigError
from services.agent.nvml import NvmlReader, NvmlUnavailable
from services.agent.simulated import SimulatedGpuSource
from services.agent.triton_stats import StatsSource, TritonSnapshot, TritonStatsReader
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.config import BackendConfig, MeshConfig

log = structlog.get_logger("switchyard.agent")

ChannelFactory = Callable[[str], grpc.aio.Channel]
StatsFactory = Callable[[BackendConfig], StatsSource]

SOURCE_NAMES = {telemetry_pb2.TELEMETRY_SOURCE_NVML: "nvml",
                telemetry_pb2.TELEMETRY_SOURCE_SIMULATED: "simulated"}


def default_stats_factory(backend: BackendConfig) -> StatsSource:
    """A real Triton reader for the backend; metrics scraped only when it has a metrics port."""
    metrics = (f"http://{backend.host}:{backend.metrics_port}/metrics"
               if backend.metrics_port else None)
    return TritonStatsReader(backend.endpoint, backend.variants, metrics_url=metrics)


def backend_message(config: MeshConfig, b: BackendConfig) -> fleet_pb2.Backend:
    """The ``Backend`` registration for a configured backend (logical model per variant)."""
    refs = []
    for name in b.variants:
        model, variant = next((m, v) for m in config.models for v in m.variants
                              if v.name == name)
        refs.append(fleet_pb2.VariantRef(logical_model=model.name, variant=name,
                                         quality=variant.quality))
    return fleet_pb2.Backend(
        id=b.id, endpoint=b.endpoint, cloud=config.region_cloud(b.region), region=b.region,
        accelerator=b.accelerator, accelerator_count=b.accelerator_count,
        price_class=b.price_class, variants=refs, max_concurrency=b.max_concurrency)


class NodeAgent:
    """Registers ``backend_ids`` with placement and streams their telemetry.

    ``placement``: replica addresses (host:port), tried in turn; default the config's
    placement address followed by its ``replicas``. ``gpu_map``: backend id → GPU indexes;
    default the i-th backend gets GPU ``i % gpu_count``. ``nvml``: a pynvml-like module
    (default the real one). ``simulated``: the fallback source (default a fresh one).
    """

    def __init__(self, config: MeshConfig, backend_ids: Sequence[str], *,
                 placement: Sequence[str] | None = None,
                 interval_s: float = 1.0,
                 agent_id: str | None = None,
                 gpu_map: Mapping[str, Sequence[int]] | None = None,
                 nvml: Any = None,
                 simulated: SimulatedGpuSource | None = None,
                 stats_factory: StatsFactory = default_stats_factory,
                 channel_factory: ChannelFactory = grpc.aio.insecure_channel,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None,
                 rpc_timeout_s: float = 2.0,
                 initial_backoff_s: float = 0.1,
                 max_backoff_s: float = 5.0,
                 fan_out: bool = False,
                 discovery: Any = None) -> None:
        by_id = {b.id: b for b in config.backends}
        unknown = [b for b in backend_ids if b not in by_id]
        if unknown or not backend_ids:
            raise ConfigError(f"--backends {list(backend_ids)!r}: {unknown or 'none'} not in "
                              f"backends {sorted(by_id)}")
        if interval_s <= 0:
            raise ConfigError(f"interval_s {interval_s} must be > 0")
        self.config = config
        self.backends = [by_id[b] for b in backend_ids]
        self.placement = list(placement) if placement else [
            f"{config.placement.host}:{config.placement.port}", *config.placement.replicas]
        self.interval_s = interval_s
        self.agent_id = agent_id or f"agent-{socket.gethostname()}"
        self._gpu_map = {k: list(v) for k, v in (gpu_map or {}).items()}
        self._nvml_module = nvml
        self._simulated = simulated
        self._stats_factory = stats_factory
        self._channel_factory = channel_factory
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rpc_timeout_s = rpc_timeout_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self.fan_out = fan_out
        # A services.discovery.Discovery (Consul): each backend is registered there too,
        # with a gRPC health check on Triton's port, and deregistered at stop.
        self.discovery = discovery
        self._nvml: NvmlReader | None = None
        self._stats: dict[str, StatsSource] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.source = telemetry_pb2.TELEMETRY_SOURCE_UNSPECIFIED
        self.gpus: dict[str, list[int]] = {}
        self.reports_sent = 0
        self.sessions = 0
        self.connected_to: str | None = None
        self._registered = False
        self._log = log.bind(agent=self.agent_id)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Pick the GPU source, open the Triton readers and start the report loop."""
        if self.discovery is not None:
            from services.discovery.base import HealthCheck

            for b in self.backends:
                await self.discovery.register(backend_message(self.config, b),
                                              HealthCheck("grpc", b.endpoint))
                self._log.info("agent.registered_in_catalog", backend=b.id)
        self._init_gpu_source()
        self._stats = {b.id: self._stats_factory(b) for b in self.backends}
        self._task = asyncio.create_task(self.run(), name=f"node-agent-{self.agent_id}")

    async def stop(self) -> None:
        """Close the stream cleanly (placement gets its ack), then the readers and NVML."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for s in self._stats.values():
            await s.close()
        if self._nvml is not None:
            self._nvml.close()
        if self.discovery is not None:
            for b in self.backends:
                with contextlib.suppress(Exception):  # best effort: the check expires it
                    await self.discovery.deregister(b.id)
            await self.discovery.close()

    async def wait(self) -> None:
        """Run until :meth:`stop` (or until the loop fails, which it should not)."""
        if self._task is not None:
            await self._task

    def _init_gpu_source(self) -> None:
        reader = NvmlReader(self._nvml_module)
        try:
            count, reason = reader.start(), "NVML initialised but found no GPU"
            if not count:
                reader.close()
        except NvmlUnavailable as exc:
            count, reason = 0, str(exc)
        if count:
            self.source = telemetry_pb2.TELEMETRY_SOURCE_NVML
            self._nvml = reader
            self._log.info("agent.gpu_source_nvml", source="nvml", gpus=count)
        else:
            self.source = telemetry_pb2.TELEMETRY_SOURCE_SIMULATED
            self._simulated = self._simulated or SimulatedGpuSource()
            count = len(self.backends)
            self._log.warning(
                "agent.gpu_source_simulated", source="simulated", reason=reason,
                note="NVML unavailable: GPU readings are SIMULATED from Triton load, "
                     "not measured; every report says source=simulated")
        for i, b in enumerate(self.backends):
            self.gpus[b.id] = self._gpu_map.get(b.id) or [i % count]
        self._log = self._log.bind(source=SOURCE_NAMES[self.source])

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, register, stream; on any failure back off and try the next replica.

        With ``fan_out`` every replica gets its own session (placement replicas share no
        state, so each must hear every backend); otherwise replicas are tried in turn.
        """
        if self.fan_out and len(self.placement) > 1:
            await asyncio.gather(*(self._loop([a]) for a in self.placement))
        else:
            await self._loop(self.placement)

    async def _loop(self, replicas: list[str]) -> None:
        attempt, replica = 0, 0
        while not self._stopping:
            address = replicas[replica % len(replicas)]
            try:
                await self._session(address)
            except grpc.aio.AioRpcError as exc:
                self._log.warning("agent.placement_unreachable", placement=address,
                                  code=exc.code().name, details=exc.details())
            except (TimeoutError, asyncio.InvalidStateError, grpc.RpcError) as exc:
                self._log.warning("agent.stream_broken", placement=address, error=repr(exc))
            finally:
                self.connected_to = None
            if self._registered:
                attempt = 0  # it worked until now: reconnect fast, then back off again
            replica += 1
            delay = self._backoff(attempt)
            attempt += 1
            self._log.info("agent.reconnect_in", seconds=round(delay, 3), attempt=attempt,
                           next_placement=replicas[replica % len(replicas)])
            await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
        ceiling = min(self._max_backoff_s, self._initial_backoff_s * 2.0**attempt)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def _session(self, address: str) -> None:
        self._registered = False
        channel = self._channel_factory(address)
        call: Any = None
        try:
            stub = placement_pb2_grpc.PlacementStub(channel)
            for b in self.backends:
                resp = await stub.RegisterBackend(
                    placement_pb2.RegisterBackendRequest(backend=backend_message(self.config, b)),
                    timeout=self._rpc_timeout_s)
                self._log.info("agent.registered", backend=b.id, placement=address,
                               version=resp.version)
            self._registered = True
            self.sessions += 1
            self.connected_to = address
            call = stub.StreamTelemetry()
            while not self._stopping:
                for report in await self.reports():
                    await asyncio.wait_for(call.write(report), timeout=self._rpc_timeout_s)
                    self.reports_sent += 1
                    self._log.debug("agent.report_sent", backend=report.backend_id,
                                    ready=report.backend_ready)
                await self._sleep(self.interval_s)
        finally:
            if call is not None:
                await self._finish(call)
            await channel.close()

    async def _finish(self, call: Any) -> None:
        """Half-close the stream and take placement's ack, briefly; a broken call is ignored."""
        if call.done():
            return
        try:
            await asyncio.wait_for(call.done_writing(), timeout=0.5)
            ack = await asyncio.wait_for(call, timeout=0.5)
            self._log.info("agent.stream_closed", accepted=ack.accepted)
        except (grpc.RpcError, TimeoutError, asyncio.InvalidStateError):
            call.cancel()

    # -- reports ---------------------------------------------------------------------

    async def reports(self) -> list[telemetry_pb2.TelemetryReport]:
        """One ``TelemetryReport`` per backend, read now (Triton reads run concurrently)."""
        snaps = await asyncio.gather(*(self._stats[b.id].read() for b in self.backends))
        unix_ms = int(self._clock() * 1000)
        return [self._report(b, snap, unix_ms)
                for b, snap in zip(self.backends, snaps, strict=True)]

    def _report(self, b: BackendConfig, snap: TritonSnapshot,
                unix_ms: int) -> telemetry_pb2.TelemetryReport:
        if self.source == telemetry_pb2.TELEMETRY_SOURCE_NVML:
            assert self._nvml is not None
            gpus = [self._nvml.read(i) for i in self.gpus[b.id]]
        else:
            assert self._simulated is not None
            gpus = [self._simulated.read(b.id, i, b.accelerator, b.accelerator_count,
                                         b.variants, snap.models) for i in self.gpus[b.id]]
        return telemetry_pb2.TelemetryReport(
            backend_id=b.id, agent_id=self.agent_id, source=self.source, unix_ms=unix_ms,
            gpus=gpus, models=snap.models, backend_ready=snap.ready, inflight=snap.inflight)
