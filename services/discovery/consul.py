"""ConsulDiscovery: backends from Consul health, prices and tenant policies from KV.

- Agents :meth:`~ConsulDiscovery.register` each Triton backend as a service named
  ``settings.backend_service`` with its description in meta (:mod:`.meta`) and a gRPC, HTTP
  or TCP check, and deregister it on shutdown.
- Placement :meth:`~ConsulDiscovery.watch`\\ es ``/v1/health/service/<name>?passing`` and
  ``/v1/kv/<prefix>/?recurse`` with blocking queries (:mod:`.blocking` holds the index
  rules); prices from KV overlay the prices file, tenant policies come from KV alone.
- Edges ask :meth:`~ConsulDiscovery.placement_endpoints` (the catalog's placement service).

Consul away never shrinks the fleet: the last known state is kept and re-emitted with
``stale=True``, the loops back off and retry, and the first good answer clears ``stale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import consul
import consul.aio
import structlog

from placement.errors import ConfigError
from services.api.switchyard.v1 import fleet_pb2
from services.config import MeshConfig
from services.discovery import documents
from services.discovery.base import (
    BackendEntry,
    DiscoveryState,
    DiscoveryUnavailable,
    HealthCheck,
)
from services.discovery.blocking import Backoff, IndexTracker, TokenBucket, jittered_wait
from services.discovery.broadcast import StateBroadcast
from services.discovery.meta import (
    PLACEMENT_SHARD_META,
    SERVICE_TAG,
    MetaError,
    backend_from_service,
    backend_meta,
)
from services.discovery.settings import ConsulSettings

log = structlog.get_logger("switchyard.discovery.consul")

# What "Consul is away" looks like from py-consul over aiohttp.
CONSUL_ERRORS = (consul.ConsulException, aiohttp.ClientError, TimeoutError, OSError)
Sleep = Callable[[float], Awaitable[None]]


def make_client(settings: ConsulSettings) -> consul.aio.Consul:
    """A py-consul aio client from settings alone.

    py-consul lets ``CONSUL_HTTP_TOKEN`` override an explicit token; the token is set again
    after construction so that only the validated settings decide.
    """
    host, port = settings.host_port
    verify: bool | str = settings.tls.ca_file or settings.tls.verify
    cert = ((settings.tls.cert_file, settings.tls.key_file)
            if settings.tls.cert_file and settings.tls.key_file else None)
    token = settings.resolved_token()
    client = consul.aio.Consul(
        host=host, port=port, scheme=settings.scheme, token=token, dc=settings.datacenter,
        verify=verify, cert=cert,
        # A blocking query may legitimately last wait + wait/16 (Consul's own jitter).
        connections_timeout=settings.wait_s * 17 / 16 + 10)
    client.token = token
    return client


def check_definition(check: HealthCheck) -> dict[str, Any]:
    """The agent API's check object for a :class:`HealthCheck` (py-consul's ``Check``)."""
    interval, timeout = f"{check.interval_s:g}s", f"{check.timeout_s:g}s"
    deregister = (f"{check.deregister_critical_after_s:g}s"
                  if check.deregister_critical_after_s else None)
    definition: dict[str, Any]
    if check.kind == "grpc":
        definition = consul.Check.grpc(check.target, interval, timeout=timeout,
                                       deregister=deregister)
    elif check.kind == "http":
        definition = consul.Check.http(check.target, interval, timeout=timeout,
                                       deregister=deregister)
    else:
        host, _, port = check.target.rpartition(":")
        definition = consul.Check.tcp(host, int(port), interval, timeout=timeout,
                                      deregister=deregister)
    return definition


class ConsulDiscovery:
    """:class:`~services.discovery.base.Discovery` over a Consul agent's HTTP API."""

    def __init__(self, settings: ConsulSettings, *, base_prices: Iterable[fleet_pb2.Price] = (),
                 client: consul.aio.Consul | None = None, sleep: Sleep = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self._s = settings
        self._client = client or make_client(settings)
        self._base_prices = tuple(base_prices)
        self._sleep = sleep
        self._rand = rand
        self._broadcast = StateBroadcast(DiscoveryState(
            prices=documents.merge_prices(self._base_prices), stale=True, source="consul"))
        self._backends: tuple[BackendEntry, ...] = ()
        self._kv: dict[str, tuple[int, Any]] = {}  # key -> (ModifyIndex, parsed document)
        self._ok = {"health": False, "kv": False}
        self._first = {"health": asyncio.Event(), "kv": asyncio.Event()}
        self._tasks: list[asyncio.Task[None]] = []
        self._registered: set[str] = set()
        self._placement_last: dict[str, list[str]] | None = None  # by shard
        self.health_index = IndexTracker()
        self.kv_index = IndexTracker()

    @classmethod
    def from_config(cls, config: MeshConfig, settings: ConsulSettings) -> ConsulDiscovery:
        """Prices from the mesh's prices file are the base layer KV prices override."""
        return cls(settings, base_prices=documents.load_prices_file(
            config.path(config.prices_file)))

    # --- Discovery -------------------------------------------------------------------------

    async def snapshot(self) -> DiscoveryState:
        await self._ensure_started()
        return self._broadcast.state

    async def watch(self) -> AsyncIterator[DiscoveryState]:
        await self._ensure_started()
        async for state in self._broadcast.watch():
            yield state

    async def register(self, backend: fleet_pb2.Backend, check: HealthCheck) -> None:
        """Register ``backend`` with the local agent (replacing its checks if it exists)."""
        host, _, port = backend.endpoint.rpartition(":")
        await self._call(f"register backend {backend.id!r}", self._client.agent.service.register(
            self._s.backend_service, service_id=backend.id, address=host, port=int(port),
            tags=[SERVICE_TAG, f"region={backend.region}", f"cloud={backend.cloud}"],
            meta=backend_meta(backend), check=check_definition(check),
            replace_existing_checks=True))
        self._registered.add(backend.id)
        log.info("consul.registered", backend=backend.id, endpoint=backend.endpoint,
                 check=check.kind)

    async def deregister(self, backend_id: str) -> None:
        await self._call(f"deregister {backend_id!r}",
                         self._client.agent.service.deregister(backend_id))
        self._registered.discard(backend_id)
        log.info("consul.deregistered", service_id=backend_id)

    async def register_placement(self, replica_id: str, endpoint: str, check: HealthCheck,
                                 shard: str = "") -> None:
        """Announce a placement replica so edges find it through the catalog; ``shard``: the
        shard it serves (``shards[i]``, tagged ``shard=…`` and in its meta; "" unsharded)."""
        host, _, port = endpoint.rpartition(":")
        await self._call(f"register placement {replica_id!r}",
                         self._client.agent.service.register(
                             self._s.placement_service, service_id=replica_id, address=host,
                             port=int(port),
                             tags=[SERVICE_TAG, *([f"shard={shard}"] if shard else [])],
                             meta={PLACEMENT_SHARD_META: shard} if shard else None,
                             check=check_definition(check), replace_existing_checks=True))
        self._registered.add(replica_id)

    async def placement_endpoints(self) -> list[str]:
        """Placement replicas from the catalog; the last known list while Consul is away."""
        return [a for replicas in (await self.placement_shards()).values() for a in replicas]

    async def placement_shards(self) -> dict[str, list[str]]:
        """Placement replicas from the catalog by the shard each registered with ("" for an
        unsharded one); the last known answer while Consul is away."""
        try:
            _, nodes = await self._client.catalog.service(self._s.placement_service)
        except CONSUL_ERRORS as exc:
            if self._placement_last is None:
                raise DiscoveryUnavailable(
                    f"consul at {self._s.address}: cannot list {self._s.placement_service!r} "
                    f"and no earlier answer is known: {exc!r}", retry_after_s=1.0) from exc
            log.warning("consul.placement_stale", error=repr(exc), kept=self._placement_last)
            return {k: list(v) for k, v in self._placement_last.items()}
        found: dict[str, list[str]] = {}
        for n in nodes or []:
            shard = (n.get("ServiceMeta") or {}).get(PLACEMENT_SHARD_META, "")
            found.setdefault(shard, []).append(
                f"{n.get('ServiceAddress') or n.get('Address')}:{n['ServicePort']}")
        self._placement_last = found
        return {k: list(v) for k, v in found.items()}

    async def close(self) -> None:
        """Stop the watches, deregister what this process registered, close the session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sid in sorted(self._registered):
            try:
                await self.deregister(sid)
            except DiscoveryUnavailable as exc:
                log.warning("consul.deregister_failed", service_id=sid, error=exc.message)
        self._broadcast.close()
        await self._client.close()

    # --- internals -------------------------------------------------------------------------

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except CONSUL_ERRORS as exc:
            raise DiscoveryUnavailable(f"consul at {self._s.address}: {what} failed: {exc!r}",
                                       retry_after_s=1.0) from exc

    async def _ensure_started(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._loop("health", self.health_index, self._fetch_health)),
                asyncio.create_task(self._loop("kv", self.kv_index, self._fetch_kv)),
            ]
        await asyncio.gather(*(e.wait() for e in self._first.values()))

    async def _loop(self, name: str, tracker: IndexTracker,
                    fetch: Callable[[int, str], Awaitable[str | None]]) -> None:
        """One blocking-query loop: rate limited, index handled as Consul documents."""
        bucket = TokenBucket(self._s.rate_burst, self._s.rate_refill_s, sleep=self._sleep)
        backoff = Backoff(self._s.retry_min_s, self._s.retry_max_s, rand=self._rand)
        while True:
            await bucket.take()
            wait = jittered_wait(self._s.wait_s, self._s.wait_jitter, self._rand)
            try:
                header = await fetch(tracker.index, wait)
            except (*CONSUL_ERRORS, KeyError, TypeError, ValueError) as exc:
                # Unreachable, refused, or an answer of the wrong shape: keep the last state.
                delay = backoff.next_delay()
                self._mark(name, ok=False, error=exc, retry_in=delay)
                await self._sleep(delay)
                continue
            backoff.reset()
            before = tracker.index
            tracker.update(header)
            if tracker.index == 0 and before:
                log.info("consul.index_reset", watch=name, previous=before, returned=header)
            self._mark(name, ok=True)

    def _mark(self, name: str, *, ok: bool, error: BaseException | None = None,
              retry_in: float = 0.0) -> None:
        was_ok, self._ok[name] = self._ok[name], ok
        if not ok and (was_ok or not self._first[name].is_set()):
            log.warning("consul.unavailable_keeping_last_state", watch=name,
                        address=self._s.address, error=repr(error), retry_in_s=round(retry_in, 3),
                        backends_kept=len(self._backends))
        elif ok and not was_ok and self._first[name].is_set():
            log.info("consul.reachable_again", watch=name)
        self._first[name].set()
        self._publish()

    def _publish(self) -> None:
        kv_prices = [p for key, (_, doc) in sorted(self._kv.items())
                     if key.startswith(self._prefix("prices/")) for p in doc]
        policies = {key.removeprefix(self._prefix("tenants/")): doc
                    for key, (_, doc) in sorted(self._kv.items())
                    if key.startswith(self._prefix("tenants/"))}
        self._broadcast.publish(dataclasses.replace(
            self._broadcast.state, backends=self._backends,
            prices=documents.merge_prices(self._base_prices, kv_prices), policies=policies,
            stale=not all(self._ok.values())))

    def _prefix(self, sub: str = "") -> str:
        return f"{self._s.kv_prefix.rstrip('/')}/{sub}"

    async def _fetch_health(self, index: int, wait: str) -> str | None:
        header, entries = await self._client.health.service(
            self._s.backend_service, index=index or None, wait=wait,
            passing=self._s.only_passing)
        out = []
        for entry in entries or []:
            try:
                backend = backend_from_service(entry["Service"], entry["Node"].get("Address", ""))
            except MetaError as exc:
                log.warning("consul.bad_service_meta", error=str(exc))
                continue
            healthy = all(c.get("Status") == "passing" for c in entry.get("Checks", []))
            out.append(BackendEntry(backend, healthy))
        self._backends = tuple(sorted(out, key=lambda e: e.backend.id))
        return header  # type: ignore[no-any-return]

    async def _fetch_kv(self, index: int, wait: str) -> str | None:
        header, items = await self._client.kv.get(self._prefix(), index=index or None,
                                                  wait=wait, recurse=True)
        fresh: dict[str, tuple[int, Any]] = {}
        for item in items or []:
            key, modify = item["Key"], int(item.get("ModifyIndex", 0))
            if key in self._kv and self._kv[key][0] == modify:
                fresh[key] = self._kv[key]
                continue
            parsed = self._parse_kv(key, item.get("Value"))
            if parsed is not None:
                fresh[key] = (modify, parsed)
            elif key in self._kv:
                fresh[key] = self._kv[key]  # a bad edit keeps the last good value
        self._kv = fresh
        return header  # type: ignore[no-any-return]

    def _parse_kv(self, key: str, value: bytes | None) -> Any:
        where = f"consul kv {key}"
        try:
            if value is None or key.endswith("/"):
                return None
            doc = documents.parse_document(value.decode(), where)
            if key.startswith(self._prefix("prices/")):
                return documents.prices_from_document(doc, where)
            if key.startswith(self._prefix("tenants/")):
                return documents.policy_from_document(doc, where)
        except (ConfigError, UnicodeDecodeError) as exc:
            log.warning("consul.bad_kv_value_ignored", key=key, error=str(exc))
        return None

