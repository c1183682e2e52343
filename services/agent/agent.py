"""The node agent: registers this host's Triton backends with placement and streams telemetry.

One ``NodeAgent`` per host. :meth:`NodeAgent.start` starts its GPU source
(:class:`services.agent.gpus.GpuSource`: NVML on its own thread, or explicitly simulated
readings until NVML comes up) and then runs:

* **one producer**: every ``interval_s`` it reads Triton and the GPUs ONCE and puts the
  same round of ``TelemetryReport``s (one per backend) into every replica's
  :class:`Mailbox`. Reading once matters: an NVML XID event is consumed by the read that
  drains it, so a read per replica would tell only one replica about it;
* **one session loop per placement replica** (or one loop trying replicas in turn with
  ``fan_out=False``): connect, ``RegisterBackend`` every backend, open ONE
  ``StreamTelemetry`` stream and write each round from its mailbox; when a call fails or
  the stream breaks, back off exponentially with jitter (capped at ``max_backoff_s``),
  move to the next replica, and start again — re-registering, because a restarted
  placement rebuilds its fleet from registrations.

Each agent process holds its backend ids by a lease token of its own (random, the same to
every replica, gRPC metadata ``x-switchyard-lease`` on ``RegisterBackend``,
``StreamTelemetry`` and ``DeregisterBackend``): while it reports, no other process can
deregister, re-register or report its ids, even in plaintext
(``services/placement/identity.py``). With ``deregister_on_stop`` (``--deregister-on-stop``)
:meth:`NodeAgent.stop` deregisters its backends from every replica with it; by default it
does not (a stopped agent is not a stopped Triton: placement keeps routing on the rows until
they go stale, and a deregistration would drop an operator's drain and the learned loads). A
restarted agent has a new token: placement accepts it once the old one's lease lapses
(``placement.stale_after_s`` without a report), or at once after a deregistration.

With ``[[placement.shards]]`` (and no ``placement`` addresses given) each backend belongs
to the shard owning its region: the agent runs those loops per shard, each registering and
reporting only that shard's backends (``services/placement/shard.py``).

The clock, the sleep, the random source, the channel factory, pynvml and the Triton
statistics readers are all injected, so tests run it against in-process fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog

from placement.errors import ConfigError
from services.agent.catalog import CatalogRegistration
from services.agent.gpus import SOURCE_NAMES, GpuSelection, GpuSource
from services.agent.metrics import AgentCounts
from services.agent.simulated import SimulatedGpuSource
from services.agent.triton_stats import StatsSource, TritonStatsReader
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.config import BackendConfig, MeshConfig
from services.placement.identity import LEASE_KEY

log = structlog.get_logger("switchyard.agent")
# what placement answers a registration another agent's holds (services/placement/identity.py)
_REFUSED = frozenset({grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED})

ChannelFactory = Callable[[str], grpc.aio.Channel]
StatsFactory = Callable[[BackendConfig], StatsSource]
Round = list[telemetry_pb2.TelemetryReport]

__all__ = ["SOURCE_NAMES", "Mailbox", "NodeAgent", "backend_message", "default_stats_factory"]


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


class Mailbox:
    """The newest round of reports for one replica's session.

    A session that is slower than the producer (or reconnecting) gets the newest round,
    never a backlog; the XID events of rounds it never sent are folded into the newest
    round, so no replica misses an XID.
    """

    def __init__(self) -> None:
        self._round: Round | None = None
        self._ready = asyncio.Event()

    def put(self, reports: Round) -> None:
        if self._round is not None:
            reports = _fold_xids(self._round, reports)
        self._round = reports
        self._ready.set()

    async def get(self) -> Round:
        await self._ready.wait()
        self._ready.clear()
        reports, self._round = self._round or [], None
        return reports


def _fold_xids(unsent: Round, newest: Round) -> Round:
    lost = {(r.backend_id, g.index): list(g.xid_events)
            for r in unsent for g in r.gpus if g.xid_events}
    if not lost:
        return newest
    out = []
    for shared in newest:  # rounds are shared between mailboxes: fold into a copy
        r = telemetry_pb2.TelemetryReport()
        r.CopyFrom(shared)
        for g in r.gpus:
            g.xid_events[:0] = [x for x in lost.get((r.backend_id, g.index), [])
                                if x not in g.xid_events]
        out.append(r)
    return out


def _by_shard(config: MeshConfig, backends: list[BackendConfig]
              ) -> list[tuple[list[str], list[BackendConfig]]]:
    """(the shard's replicas, this agent's backends in its regions) for every shard that
    owns one of them; none without ``placement.shards``."""
    out = []
    for shard in config.placement.shards:
        mine = [b for b in backends if b.region in shard.regions]
        if mine:
            out.append((list(shard.replicas), mine))
    return out


class NodeAgent:
    """Registers ``backend_ids`` with placement and streams their telemetry.

    ``placement``: replica addresses (host:port); default the config's placement address
    followed by its ``replicas``. ``gpus``: which GPUs (``--gpus``, see
    :mod:`services.agent.gpus`). ``nvml``: a pynvml-like module (default the real one).
    ``simulated``: the fallback source (default a fresh one). ``nvml_retry_s``: first and
    longest wait between NVML retries while it is unavailable. ``replicas``: looks the
    placement replicas up again (see :meth:`run`).
    """

    def __init__(self, config: MeshConfig, backend_ids: Sequence[str], *,
                 placement: Sequence[str] | None = None,
                 interval_s: float = 1.0,
                 agent_id: str | None = None,
                 gpus: GpuSelection | None = None,
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
                 nvml_retry_s: tuple[float, float] = (1.0, 60.0),
                 fan_out: bool = False,
                 replicas: Callable[[], Awaitable[Sequence[str]]] | None = None,
                 replicas_every_s: float = 30.0,
                 discovery: Any = None,
                 lease_token: str | None = None,
                 deregister_on_stop: bool = False) -> None:
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
        self._stats_factory = stats_factory
        self._channel_factory = channel_factory
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rpc_timeout_s = rpc_timeout_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self.fan_out = fan_out
        self._replica_lookup = replicas
        self._replicas_every_s = replicas_every_s
        # session key (replica address; "" for the one in-turn session) -> its mailbox, task
        self._sessions: dict[str, tuple[Mailbox, asyncio.Task[None]]] = {}
        # Sharded placement: session key -> the backends it carries (absent: every one).
        self._carries: dict[str, list[BackendConfig]] = {}
        self.shards = [] if placement else _by_shard(config, self.backends)
        # A services.discovery.Discovery (Consul): each backend is registered there too,
        # with a gRPC health check on Triton's port (retried in the background while the
        # catalog answers errors), and deregistered at stop.
        self.discovery = discovery
        self.gpu_source = GpuSource(self.backends, nvml=nvml, simulated=simulated,
                                    selection=gpus, sleep=sleep,
                                    retry_initial_s=nvml_retry_s[0],
                                    retry_max_s=nvml_retry_s[1],
                                    agent_id=self.agent_id)
        self._stats: dict[str, StatsSource] = {}
        self._task: asyncio.Task[None] | None = None
        self.catalog: CatalogRegistration | None = None
        self._catalog_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.reports_sent = 0
        self.rounds = 0
        self.sessions = 0
        self.connected_to: str | None = None
        self.connected: set[str] = set()  # replicas with a live telemetry stream now
        self.counts = AgentCounts()  # registrations and heartbeats by outcome (/metrics)
        # the secret this process holds its backend ids by on placement (module docstring)
        self.lease_token = lease_token or secrets.token_urlsafe(32)
        self._lease = ((LEASE_KEY, self.lease_token),)
        self.deregister_on_stop = deregister_on_stop
        self._registered = False

    @property
    def source(self) -> telemetry_pb2.TelemetrySource:
        """``TELEMETRY_SOURCE_NVML`` or ``_SIMULATED`` (changes once if NVML comes up late)."""
        return self.gpu_source.source

    @property
    def gpus(self) -> dict[str, list[int]]:
        """Backend id → the GPU indexes it is reported with."""
        return self.gpu_source.gpus

    @property
    def _log(self) -> Any:
        return log.bind(agent=self.agent_id, source=self.gpu_source.source_name)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the GPU source, open the Triton readers and start the loops."""
        await self.gpu_source.start()
        if self.discovery is not None:  # (services/agent/catalog.py)
            consul = self.config.consul
            self.catalog = CatalogRegistration(
                self.discovery, [(backend_message(self.config, b),
                                  consul.health_check("grpc", b.endpoint))
                                 for b in self.backends],
                retry_s=(consul.retry_min_s, consul.retry_max_s), sleep=self._sleep,
                rng=self._rng, log=self._log)
            await self.catalog.register_pending()
            if self.catalog.pending:
                self._catalog_task = asyncio.create_task(self.catalog.retry(),
                                                         name="agent-catalog-registration")
        self._stats = {b.id: self._stats_factory(b) for b in self.backends}
        self._task = asyncio.create_task(self.run(), name=f"node-agent-{self.agent_id}")

    async def stop(self) -> None:
        """Close the streams cleanly (placement gets its ack), then the readers and NVML."""
        self._stopping = True
        replicas = self._every_replica()
        if self._catalog_task is not None:
            self._catalog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catalog_task
            self._catalog_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.deregister_on_stop:
            await asyncio.gather(*(self._deregister(a, bs) for a, bs in replicas))
        for s in self._stats.values():
            await s.close()
        await self.gpu_source.close()
        if self.discovery is not None:
            for b in self.backends:
                with contextlib.suppress(Exception):  # best effort: the check expires it
                    await self.discovery.deregister(b.id)
            await self.discovery.close()

    def _every_replica(self) -> list[tuple[str, list[BackendConfig]]]:
        """Each placement replica this agent registers with, and the backends it registers
        there."""
        if self.shards:
            return [(a, bs) for replicas, bs in self.shards for a in replicas]
        return [(a, self.backends) for a in (self.replicas or self.placement)]

    async def _deregister(self, address: str, backends: list[BackendConfig]) -> None:
        """Deregister ``backends`` from one replica with this agent's lease; best effort,
        each outcome logged (a replica that is down drops them when they go stale)."""
        async with self._channel_factory(address) as channel:
            stub = placement_pb2_grpc.PlacementStub(channel)
            for b in backends:
                try:
                    await stub.DeregisterBackend(
                        placement_pb2.DeregisterBackendRequest(backend_id=b.id),
                        timeout=self._rpc_timeout_s, metadata=self._lease)
                except grpc.aio.AioRpcError as exc:
                    self._log.warning("agent.deregister_failed", backend=b.id,
                                      placement=address, code=exc.code().name,
                                      details=exc.details())
                else:
                    self._log.info("agent.deregistered", backend=b.id, placement=address)

    async def wait(self) -> None:
        """Run until :meth:`stop` (or until the loop fails, which it should not)."""
        if self._task is not None:
            await self._task

    # -- the loops -------------------------------------------------------------------

    async def run(self) -> None:
        """One producer, and a session loop per replica (``fan_out``) or one for all.

        With ``replicas`` (e.g. the Consul catalog) the replica set is looked up again every
        ``replicas_every_s``: a new replica (a restarted pod has a new address) gets its own
        session, one that left is closed; an empty or failed lookup changes nothing.
        """
        if self.shards:
            for i, (replicas, backends) in enumerate(self.shards):
                for key, tried in ([(a, [a]) for a in replicas] if self.fan_out
                                   else [(f"shards[{i}]", replicas)]):
                    box = Mailbox()
                    self._carries[key] = backends
                    self._sessions[key] = (box, asyncio.create_task(
                        self._loop(tried, box, backends), name=f"agent-session-{key}"))
        elif not self.fan_out:
            box = Mailbox()
            self._sessions[""] = (box, asyncio.create_task(self._loop(self.placement, box)))
        else:
            self._sync_replicas(self.placement)
        try:
            await asyncio.gather(self._produce(), self._follow_replicas())
        finally:
            for _, task in self._sessions.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in self._sessions.values()),
                                 return_exceptions=True)
            self._sessions.clear()

    @property
    def replicas(self) -> list[str]:
        """The placement replicas with a session of their own now (``fan_out``)."""
        return [a for a in self._sessions if a]

    def _sync_replicas(self, addresses: Sequence[str]) -> None:
        for address in addresses:
            if address not in self._sessions:
                box = Mailbox()
                self._sessions[address] = (box, asyncio.create_task(
                    self._loop([address], box), name=f"agent-session-{address}"))
        for address in [a for a in self._sessions if a not in addresses]:
            self._sessions.pop(address)[1].cancel()
            self._log.info("agent.replica_left", placement=address)

    async def _follow_replicas(self) -> None:
        if self._replica_lookup is None or not self.fan_out or self.shards:
            return
        while not self._stopping:
            await self._sleep(self._replicas_every_s)
            try:
                found = list(await self._replica_lookup())
            except Exception as exc:  # a lookup that fails keeps the sessions we have
                self._log.warning("agent.replica_lookup_failed", error=repr(exc))
                continue
            if found and set(found) != set(self.replicas):
                self._log.info("agent.replicas_changed", was=self.replicas, now=found)
                self._sync_replicas(found)

    async def _produce(self) -> None:
        """Read everything once per interval and give every session the same round."""
        while not self._stopping:
            try:
                reports = await self.reports()
            except Exception:  # a bad round must not end telemetry for good
                self._log.exception("agent.read_failed", action="skipping this round")
            else:
                for key, (box, _) in self._sessions.items():
                    carries = self._carries.get(key)
                    if carries is None:
                        box.put(reports)
                    else:
                        ids = {b.id for b in carries}
                        box.put([r for r in reports if r.backend_id in ids])
                self.rounds += 1
            await self._sleep(self.interval_s)

    async def _loop(self, replicas: list[str], box: Mailbox,
                    backends: list[BackendConfig] | None = None) -> None:
        attempt, replica = 0, 0
        while not self._stopping:
            address = replicas[replica % len(replicas)]
            try:
                await self._session(address, box, backends or self.backends)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _REFUSED:  # placement answered: another agent holds an id
                    self._log.error("agent.registration_refused", placement=address,
                                    code=exc.code().name, details=exc.details(),
                                    action="no backend of this agent reports until placement "
                                    "accepts every one: give the backend a unique id, or "
                                    "deregister the holder; retrying with backoff")
                else:
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

    async def _session(self, address: str, box: Mailbox, backends: list[BackendConfig]
                       ) -> None:
        self._registered = False
        channel = self._channel_factory(address)
        call: Any = None
        try:
            stub = placement_pb2_grpc.PlacementStub(channel)
            for b in backends:
                try:
                    resp = await stub.RegisterBackend(
                        placement_pb2.RegisterBackendRequest(
                            backend=backend_message(self.config, b)),
                        timeout=self._rpc_timeout_s, metadata=self._lease)
                except grpc.aio.AioRpcError as exc:
                    self.counts.registration("refused" if exc.code() in _REFUSED else "failed")
                    raise
                except BaseException:
                    self.counts.registration("failed")
                    raise
                self.counts.registration("ok")
                self._log.info("agent.registered", backend=b.id, placement=address,
                               version=resp.version)
            self._registered = True
            self.sessions += 1
            self.connected_to = address
            self.connected.add(address)
            call = stub.StreamTelemetry(metadata=self._lease)
            while not self._stopping:
                reports = await box.get()
                try:
                    for report in reports:
                        await asyncio.wait_for(call.write(report), timeout=self._rpc_timeout_s)
                        self.reports_sent += 1
                        self._log.debug("agent.report_sent", backend=report.backend_id,
                                        placement=address, ready=report.backend_ready)
                except (TimeoutError, asyncio.InvalidStateError, grpc.RpcError):
                    self.counts.heartbeat("failed")
                    raise
                self.counts.heartbeat("sent")
        finally:
            self.connected.discard(address)
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

    async def reports(self) -> Round:
        """One ``TelemetryReport`` per backend, read now (Triton reads run concurrently,
        the GPUs are read once, off the event loop)."""
        snaps = await asyncio.gather(*(self._stats[b.id].read() for b in self.backends))
        by_id = dict(zip((b.id for b in self.backends), snaps, strict=True))
        gpus = await self.gpu_source.read({k: s.models for k, s in by_id.items()})
        unix_ms = int(self._clock() * 1000)
        return [telemetry_pb2.TelemetryReport(
                    backend_id=b.id, agent_id=self.agent_id, source=self.source,
                    unix_ms=unix_ms, gpus=gpus[b.id], models=by_id[b.id].models,
                    backend_ready=by_id[b.id].ready, inflight=by_id[b.id].inflight)
                for b in self.backends]
