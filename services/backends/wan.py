"""EMULATED inter-region latency: a user-space TCP delay line (this kernel has no netem).

Every route listens on ``127.0.0.1:listen_port`` and relays bytes to a backend, holding each
chunk ``one_way_ms`` in each direction. Chunks are stamped when read and released at
``read_time + delay`` in order: a pipelined delay line, so a stream of chunks is delayed once,
not once per chunk, and HTTP/2 (gRPC) sees RTT grow by about ``2 x one_way_ms``. What is not
emulated: the TCP handshake to the relay itself is local, bandwidth is not limited, nothing is
dropped. Logs and docs call this "emulated"; it is not a measured WAN.

:func:`relay_routes` is the one place that decides which relay stands between an edge region
and a remote backend; the edge and ``switchyard up`` ask it (or :func:`dial_address`) which
address to dial. ``python -m services.backends.wan --config mesh.toml`` runs them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from placement.errors import ConfigError, SwitchyardError
from services import logs
from services.config import BackendConfig, MeshConfig, load_config

log = structlog.get_logger()

CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 256  # per direction; a full line stops reading (backpressure, bounded memory)


@dataclass(frozen=True)
class RelayRoute:
    """One emulated WAN path: edges in ``edge_region`` dial ``listen_port`` to reach ``target``."""

    edge_region: str
    backend_id: str
    listen_port: int
    target: str
    one_way_ms: float

    @property
    def target_host(self) -> str:
        return self.target.rsplit(":", 1)[0]

    @property
    def target_port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])


def rtt_ms(cfg: MeshConfig, a: str, b: str) -> float:
    """Planned RTT between regions from ``cfg.rtt`` (the a→b entry, else b→a; same region 0)."""
    if a == b:
        return 0.0
    for wanted in ((a, b), (b, a)):
        for entry in cfg.rtt:
            if (entry.a, entry.b) == wanted:
                return entry.ms
    raise ConfigError(f"rtt has no entry between {a!r} and {b!r}; add {{ a, b, ms }} to rtt")


def relay_routes(cfg: MeshConfig) -> list[RelayRoute]:
    """Every (edge region, backend in another region) pair, on ``relay_base_port + k``.

    ``k`` counts the pairs sorted by (edge region, backend id), so every process computes the
    same ports. Same-region backends get no relay (dialled directly). Empty when
    ``wan.emulate`` is off.
    """
    if not cfg.wan.emulate:
        return []
    region_of = {b.id: b for b in cfg.backends}
    pairs = sorted(
        (edge_region, b.id)
        for edge_region in {e.region for e in cfg.edges}
        for b in cfg.backends
        if b.region != edge_region
    )
    routes = []
    for k, (edge_region, backend_id) in enumerate(pairs):
        backend = region_of[backend_id]
        routes.append(
            RelayRoute(
                edge_region=edge_region,
                backend_id=backend_id,
                listen_port=cfg.wan.relay_base_port + k,
                target=backend.endpoint,
                one_way_ms=rtt_ms(cfg, edge_region, backend.region) / 2,
            )
        )
    return routes


def dial_address(cfg: MeshConfig, edge_region: str, backend: BackendConfig) -> str:
    """Where an edge in ``edge_region`` connects to reach ``backend``: its relay, or itself."""
    for route in relay_routes(cfg):
        if route.edge_region == edge_region and route.backend_id == backend.id:
            return f"127.0.0.1:{route.listen_port}"
    return backend.endpoint


async def _delay_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float
) -> None:
    """Copy ``reader`` to ``writer``, releasing each chunk ``delay_s`` after it was read."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def take_in() -> None:
        while True:
            data = await reader.read(CHUNK_BYTES)
            await line.put((loop.time() + delay_s, data))
            if not data:
                return

    async def give_out() -> None:
        while True:
            due, data = await line.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(take_in())
        tg.create_task(give_out())


class WanRelay:
    """Serves many :class:`RelayRoute` listeners in one event loop (``start``/``stop``).

    A route with ``listen_port`` 0 gets a kernel-chosen port; read it from :meth:`port_of`.
    """

    def __init__(self, routes: Sequence[RelayRoute], host: str = "127.0.0.1") -> None:
        self.routes = list(routes)
        self.host = host
        self._servers: list[asyncio.Server] = []
        self._ports: list[int] = []
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._accept, route), self.host, route.listen_port
            )
            port = int(server.sockets[0].getsockname()[1])
            self._servers.append(server)
            self._ports.append(port)
            log.info("wan.relay.listen", emulated=True, edge_region=route.edge_region,
                     backend=route.backend_id, listen=f"{self.host}:{port}",
                     target=route.target, one_way_ms=route.one_way_ms)

    def port_of(self, route: RelayRoute) -> int:
        """The port actually bound for ``route`` (differs from ``listen_port`` only if 0)."""
        return self._ports[self.routes.index(route)]

    async def _accept(
        self, route: RelayRoute, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        delay_s = route.one_way_ms / 1000.0
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                route.target_host, route.target_port
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_delay_line(client_r, upstream_w, delay_s))
                tg.create_task(_delay_line(upstream_r, client_w, delay_s))
        except* (OSError, asyncio.IncompleteReadError) as group:
            log.info("wan.relay.closed", emulated=True, backend=route.backend_id,
                     reason=repr(group.exceptions[0]))
        finally:
            self._conns.discard(task)
            for w in (client_w, upstream_w):
                if w is not None:
                    w.close()

    async def stop(self) -> None:
        """Stop listening and cut every relayed connection."""
        for server in self._servers:
            server.close()
        for task in list(self._conns):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        self._servers.clear()
        log.info("wan.relay.stopped", emulated=True, routes=len(self.routes))

    async def __aenter__(self) -> WanRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(routes: Sequence[RelayRoute]) -> None:
    """Run ``routes`` until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WanRelay(routes):
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.backends.wan",
        description="Run the EMULATED inter-region delay relays of a mesh config.",
    )
    parser.add_argument("--config", required=True, help="mesh TOML file")
    args = parser.parse_args(argv)
    logs.configure()
    try:
        cfg = load_config(args.config, env=dict(os.environ))
        routes = relay_routes(cfg)
    except SwitchyardError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if not routes:
        log.info("wan.relay.none", emulated=True, reason="wan.emulate is off or no remote pairs")
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(routes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
