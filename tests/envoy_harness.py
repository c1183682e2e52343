"""One Envoy edge with its slow path, over real placement, agent and Triton, for a module.

``running_envoy_mesh(cfg, run_dir)`` starts placement (ADS on its own port), a node agent,
the co-located Python edge ``<edge>-slow`` and a real Envoy whose node metadata names it,
exactly as ``python -m services.edge.envoy`` pairs them; with ``[security]`` TLS every hop is
TLS (the Envoy bootstrap from ``launcher.prepare`` carries the edge's certificate files) and
callers need ``ClientTls``. Used by ``test_envoy_slow_path.py`` (plaintext) and
``test_envoy_security.py`` (TLS, tenants). ``running_envoy_edge(cfg, run_dir)`` is the same
without the slow path (``test_envoy_edge.py``, ``test_envoy_learned_split.py``).
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.agent.agent import NodeAgent
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.launcher import EnvoyEdge, prepare
from services.edge.envoy.slowpath import start_slow_path
from services.edge.main import RunningEdge
from services.edge.router import CallRecord
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from services.security import transport
from services.xds import listener
from tests.mesh_harness import eventually, mesh_config, summarize_input


def dead(tritons: dict[str, TritonProcess]) -> str:
    """The log tails of the backends that died ("" when every one is alive)."""
    return "\n".join(f"{b}:\n{p.log_tail(20)}" for b, p in tritons.items() if not p.alive)


@dataclass(frozen=True)
class ClientTls:
    """A caller's TLS: the CA it trusts and, optionally, its own certificate (PEM files)."""

    ca_file: pathlib.Path
    cert_file: pathlib.Path | None = None
    key_file: pathlib.Path | None = None

    def channel(self, address: str) -> grpc.aio.Channel:
        key = self.key_file.read_bytes() if self.key_file else None
        chain = self.cert_file.read_bytes() if self.cert_file else None
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(
            self.ca_file.read_bytes(), key, chain))

    def client(self, address: str) -> tc.InferenceServerClient:
        return tc.InferenceServerClient(
            address, ssl=True, root_certificates=str(self.ca_file),
            private_key=str(self.key_file) if self.key_file else None,
            certificate_chain=str(self.cert_file) if self.cert_file else None)


@dataclass
class EnvoyMesh:
    placement: RunningPlacement
    slow: RunningEdge
    envoy: EnvoyEdge
    client_tls: ClientTls | None = None  # how callers reach the edge (None: plaintext)

    def client(self, address: str | None = None) -> tc.InferenceServerClient:
        address = address or self.envoy.address
        return (self.client_tls.client(address) if self.client_tls is not None
                else tc.InferenceServerClient(address))

    def channel(self, address: str | None = None) -> grpc.aio.Channel:
        address = address or self.envoy.address
        return (self.client_tls.channel(address) if self.client_tls is not None
                else grpc.aio.insecure_channel(address))

    def call(self, metadata: Sequence[tuple[str, str]] = (), model: str = "summarize",
             address: str | None = None) -> dict[str, str]:
        client = self.client(address)
        try:
            return infer_with_trailers(client, model, [summarize_input()], metadata, 5.0)[1]
        finally:
            client.close()

    def status(self, metadata: Sequence[tuple[str, str]], address: str | None = None) -> str:
        """The status of a call expected to fail (a served call fails the test)."""
        with pytest.raises(InferenceServerException) as err:
            self.call(metadata, address=address)
        return str(err.value.status())

    @contextlib.asynccontextmanager
    async def engines(self) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
        """A channel to each engine: ``python`` (the Python edge, Envoy's slow path) and
        ``envoy``."""
        async with (grpc.aio.insecure_channel(f"127.0.0.1:{self.slow.port}") as py,
                    self.channel() as envoy):
            yield {"python": py, "envoy": envoy}

    @contextlib.contextmanager
    def records(self) -> Iterator[list[CallRecord]]:
        """Every CallRecord the Python edge (the slow path) finishes meanwhile: what it logs
        and counts, the Envoy's slow-path calls included."""
        got: list[CallRecord] = []
        router = self.slow.router
        original = router.on_done

        def done(rec: CallRecord) -> None:
            got.append(rec)
            original(rec)

        router.on_done = done
        try:
            yield got
        finally:
            router.on_done = original

    def envoy_stat(self, name: str) -> int:
        for line in self.envoy.admin("/stats?filter=" + name).splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


@contextlib.asynccontextmanager
async def running_envoy_mesh(cfg: MeshConfig, run_dir: pathlib.Path,
                             client_tls: ClientTls | None = None,
                             idle_s: float | None = None) -> AsyncIterator[EnvoyMesh]:
    """Placement, an agent for every backend (dialling as ``switchyard agent`` does), the
    slow path and Envoy for ``cfg.edges[0]``; yields once Envoy listens with placement's
    config, the slow path has its tables and the agent has reported every backend.
    ``idle_s``: Envoy's stream idle timeout (default 300 s) in the listener placement pushes,
    shortened so a test sees it (placement runs in this process)."""
    with pytest.MonkeyPatch.context() as patch:
        if idle_s is not None:
            patch.setattr(listener, "STREAM_IDLE_TIMEOUT_S", idle_s)
        async with _envoy_mesh(cfg, run_dir, client_tls) as mesh:
            yield mesh


@contextlib.asynccontextmanager
async def _envoy_mesh(cfg: MeshConfig, run_dir: pathlib.Path,
                      client_tls: ClientTls | None) -> AsyncIterator[EnvoyMesh]:
    placement = await start_placement(cfg, port=0, metrics_port=0)
    address = f"127.0.0.1:{placement.port}"
    agent = NodeAgent(cfg, [b.id for b in cfg.backends], placement=[address], interval_s=0.3,
                      channel_factory=transport.channel_factory(cfg.security, "agent"))
    await agent.start()
    slow = await start_slow_path(cfg, cfg.edges[0], placement=[address], metrics_port=0)
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[address], port=free_port(),
                              run_dir=run_dir, slow_path_port=slow.port)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    envoy.start()
    try:
        await eventually(envoy.ready, 20, "Envoy listens with the config placement pushed")
        await eventually(lambda: {"summarize", "generate"} <= set(slow.router.store.candidates),
                         20, "the slow path has its route tables")
        fleet = placement.service.fleet
        await eventually(lambda: all(b.id in fleet.backends and fleet.backends[b.id].last
                                     for b in cfg.backends), 20,
                         "placement has the agent's telemetry for every backend")
        # A first report may say a Triton is not ready (a scrape that timed out on a loaded
        # host): a test starting then found every row "routable: Triton server not ready".
        await eventually(lambda: not any(
            "not ready" in c.dropped_reason
            for cs in slow.router.store.candidates.values() for c in cs), 20,
            "the slow path's rows say every Triton is ready")
        yield EnvoyMesh(placement, slow, envoy, client_tls)
    finally:
        envoy.stop()
        await slow.stop(0.5)
        await agent.stop()
        await placement.stop(0.5)


@contextlib.asynccontextmanager
async def running_envoy_edge(cfg: MeshConfig, run_dir: pathlib.Path, *, concurrency: int = 1,
                             ready_s: float = 20.0
                             ) -> AsyncIterator[tuple[RunningPlacement, EnvoyEdge]]:
    """Placement, an agent for every backend and Envoy for ``cfg.edges[0]``, no slow path;
    yields once Envoy listens with the config placement pushed."""
    placement = await start_placement(cfg, port=0, metrics_port=0)
    address = f"127.0.0.1:{placement.port}"
    agent = NodeAgent(cfg, [b.id for b in cfg.backends], placement=[address], interval_s=0.3)
    await agent.start()
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[address], port=free_port(),
                              run_dir=run_dir)
    envoy = EnvoyEdge(node, bootstrap, concurrency=concurrency)
    envoy.start()
    try:
        await eventually(envoy.ready, ready_s, "Envoy listens with the config placement pushed")
        yield placement, envoy
    finally:
        envoy.stop()
        await agent.stop()
        await placement.stop(0.5)


class ClosedLoop:
    """Closed-loop tritonclient callers of ``model`` through an edge until stopped: when each
    call started and who served it (``x-served-by``), and every failure (status: message)."""

    def __init__(self, address: str, model: str, clients: int,
                 metadata: Sequence[tuple[str, str]] = (), timeout_s: float = 20.0) -> None:
        self.address, self.model, self.metadata, self.timeout_s = (address, model, metadata,
                                                                   timeout_s)
        self.stop = threading.Event()
        self.calls: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        client = tc.InferenceServerClient(self.address)
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    _, trailers = infer_with_trailers(client, self.model, [summarize_input()],
                                                      self.metadata, self.timeout_s)
                except InferenceServerException as exc:
                    with self._lock:
                        self.failed.append(f"{exc.status()}: {exc.message()}")
                    continue
                with self._lock:
                    self.calls.append((t0, trailers.get("x-served-by", "")))
        finally:
            client.close()

    @property
    def ok(self) -> int:
        with self._lock:
            return len(self.calls)

    def served(self, since: float = 0.0, until: float = math.inf) -> list[str]:
        """Who served the calls that started in [since, until), in order."""
        with self._lock:
            return [s for t, s in self.calls if since <= t < until]

    def __enter__(self) -> ClosedLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def hostile_fixtures(name: str, idle_s: float | None = None) -> tuple[Any, Any, Any, Any]:
    """A hostile-caller module's fixtures over one Envoy edge and its slow path: ``cfg``
    (``mesh_config`` in a directory called ``name``), ``mesh`` (``running_envoy_mesh`` over
    the module's Tritons, Envoy's stream idle timeout ``idle_s`` when given), ``engines`` (a
    channel to each engine) module-scoped, and ``records`` (the slow path's call records
    during a test): ``cfg, mesh, engines, records = hostile_fixtures("hostile6", 2.0)``."""

    @pytest.fixture(scope="module")
    def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
        return mesh_config(tmp_path_factory.mktemp(name))

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
        async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy"),
                                      idle_s=idle_s) as m:
            yield m

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def engines(mesh: EnvoyMesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
        async with mesh.engines() as channels:
            yield channels

    @pytest.fixture
    def records(mesh: EnvoyMesh) -> Iterator[list[CallRecord]]:
        with mesh.records() as got:
            yield got

    return cfg, mesh, engines, records
