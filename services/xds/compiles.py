"""The ADS server's compile worker and relearn schedule (``server.AdsServer`` is one).

A region's config is compiled when the hub published and its tables changed, or between
publishes when its access log taught placement something (every ``learn_every_s``) or a
deployment that came back takes its next slow-start step (``returns.py``). Its inputs are
taken on the event loop (the tables as bytes, what was learned), the compile runs on one
worker thread (``AdsServer._compile``, the compile itself), and its result is applied on the
loop. Streams of a region asking while it compiles share that compile, and the worker compiles
at most ``compile_share`` of the time (it holds the GIL; the rest is the loop's, for
telemetry).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from placement.edge_learning import Learned
from placement.model import Candidate
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.federation import TableSource
from services.xds.learning import RegionLearning
from services.xds.resources import CompileCache, RegionConfig
from services.xds.returns import Returns
from services.xds.session import Delta

COMPILE_SHARE = 0.5  # of the time the worker may spend compiling (``AdsServer.compile_wait``)


@dataclass(frozen=True)
class _Inputs:
    """A compile's inputs, taken on the loop: the region's tables (serialized, parsed again
    by the compile, so the hub or federation may go on editing theirs) and what was learned."""

    version: int
    raw: tuple[bytes, ...]
    learned: Learned
    at: float  # learning's clock when they were taken (the slow-start shares' time)

    def tables(self) -> list[placement_pb2.RouteTable]:
        return [placement_pb2.RouteTable.FromString(b) for b in self.raw]


@dataclass
class _Compiled:
    version: int  # the hub's when its tables were read (moved on when they had not changed)
    raw: tuple[bytes, ...]
    at: float  # learning's clock at the compile
    config: RegionConfig
    delta: Delta  # its clusters against the compile before


class _Converted(Mapping[str, Candidate]):
    """A region's rows by deployment, indexed when first read and converted when read:
    learning reads the few the slow path used (none without slow-path calls), and
    converting 10,000 rows per compile on the loop was most of taking a compile's inputs;
    indexing them all was still 10.8 of 23.6 s the loop spent taking inputs in a profiled
    ``benchmarks.controlplane_ads`` run at 10,000 GPUs."""

    def __init__(self, tables: Sequence[placement_pb2.RouteTable]) -> None:
        self.tables = tables
        self._rows: dict[str, placement_pb2.Candidate] | None = None

    @property
    def rows(self) -> dict[str, placement_pb2.Candidate]:
        if self._rows is None:
            self._rows = {c.deployment_id: c for t in self.tables for c in t.candidates}
        return self._rows

    def __getitem__(self, key: str) -> Candidate:
        return candidate_from_pb(self.rows[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class RegionCompiles:
    """Each region's compiled config, when to compile it again, and the worker it compiles
    on. The server sets ``hub``, ``learning``, ``returns`` and ``learn_every_s``, calls
    ``_init_compiles`` and defines ``_compile``."""

    hub: TableSource  # a RouteHub, or a Federation of every shard's (``federation.py``)
    learning: RegionLearning
    returns: Returns
    learn_every_s: float

    def _init_compiles(self, compile_share: float) -> None:
        self._compiled: dict[str, _Compiled] = {}
        # resources kept across compiles (``resources.CompileCache``), compiled on one worker
        # thread (``region_config_async``) under a lock (``region_config`` runs on callers')
        self.cache = CompileCache.serving()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="xds-compile")
        self._compile_lock = threading.Lock()
        self._compiling: dict[str, asyncio.Future[None]] = {}
        self.compiles = 0
        self.shared = 0  # streams that waited for a compile under way instead of their own
        self.compile_s = 0.0  # on the worker thread, for the benchmark
        # the worker compiles at most this share of the time (``compile_wait``): it holds the
        # GIL while it compiles, and the loop's share is what ingests telemetry
        self.compile_share = compile_share
        self._last_compile = (0.0, 0.0)  # (loop time it ended, seconds it took)

    def _compile(self, region: str, inputs: _Inputs) -> RegionConfig:
        """The region compiled from ``inputs`` (``AdsServer._compile``)."""
        raise NotImplementedError

    def region_config(self, region: str) -> RegionConfig:
        """The region's compiled config, rebuilt only when the hub published (so an ACK does
        not make the hub publish early: its coalescing holds for Envoy edges too) and the
        region's tables changed, or with what the region's access log taught placement since
        the last compile (``learning``). Compiled here, on the caller's thread; the streams
        compile on the worker thread instead (``region_config_async``)."""
        inputs = self._inputs(region)
        if inputs is None:
            return self._compiled[region].config
        return self._apply(region, inputs, self._compile(region, inputs))

    async def region_config_async(self, region: str) -> RegionConfig:
        """``region_config`` with the compile on the worker thread (the loop keeps serving
        telemetry and the other streams meanwhile): its inputs are taken on the loop (the
        hub's tables as bytes, what was learned), the result applied on the loop. Streams of
        a region asking while it compiles (or waits for its turn, ``compile_wait``) share
        that compile: with 100 Envoys and a fleet that publishes all the time, each stream
        starting its own after waiting for the one before compiled a region once per stream
        (at 10,000 deployments the last Envoys got their first config after minutes). What
        the hub published before a stream asked but after the compile it shared took its inputs
        is the next compile's: the stream asks again (``stale``)."""
        running = self._compiling.get(region)
        if running is not None:
            self.shared += 1
            await asyncio.shield(running)
            if region in self._compiled:
                return self._compiled[region].config
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._compiling[region] = done
        try:
            if (wait := self.compile_wait(loop.time())) > 0:
                await asyncio.sleep(wait)  # the worker's share of the time, not a poll
            inputs = self._inputs(region)
            if inputs is None:
                return self._compiled[region].config
            t0 = loop.time()
            compiled = await loop.run_in_executor(self._worker, self._compile_off_loop,
                                                  region, inputs)
            self._last_compile = (loop.time(), loop.time() - t0)
            return self._apply(region, inputs, compiled)
        finally:
            del self._compiling[region]
            done.set_result(None)

    def compile_wait(self, now: float) -> float:
        """Seconds before the worker may start the next compile: after one that took ``d``,
        ``d × (1 / compile_share − 1)`` from its end (0.5: as long as it took), so compiles
        hold the worker (and with it the GIL) at most ``compile_share`` of the time; the rest
        is the loop's, for telemetry, as the hub leaves a backlog at most half of it."""
        ended, took = self._last_compile
        return max(0.0, ended + took * (1 / self.compile_share - 1) - now)

    def stale(self, region: str, asked: int) -> bool:
        """The region's last compile read the hub's tables before version ``asked`` (what a
        stream was woken for): it shared a compile that was already under way."""
        cached = self._compiled.get(region)
        return cached is not None and cached.version < asked

    def _compile_off_loop(self, region: str, inputs: _Inputs) -> RegionConfig:
        t0 = time.perf_counter()
        compiled = self._compile(region, inputs)
        self.compile_s += time.perf_counter() - t0
        return compiled

    def _inputs(self, region: str) -> _Inputs | None:
        """What a compile of ``region`` needs, taken now; None when the last compile holds
        (the hub did not publish, or published other regions' changes only, and nothing is
        to be relearned: a publish compiles what was learned since, as it always did)."""
        cached = self._compiled.get(region)
        relearn = self.relearn_due(region)
        if cached is not None and cached.version == self.hub.version and not relearn:
            return None
        tables = self.hub.snapshot(region)  # may publish: the version is read after it
        version = self.hub.version
        raw = tuple(t.SerializeToString(deterministic=True) for t in tables)
        if (cached is not None and cached.raw == raw and not relearn
                and not self.learning.stale(region)):
            # as a compile would: nothing learned to compile, nothing new (its time moves on)
            cached.version, cached.at = version, self.learning.clock()
            return None
        return _Inputs(version, raw, self.learning.learned(region, _Converted(tables)),
                       self.learning.clock())

    def _apply(self, region: str, inputs: _Inputs, compiled: RegionConfig) -> RegionConfig:
        cached = self._compiled.get(region)
        self.learning.compiled(region, compiled.models)
        before = cached.config.clusters if cached is not None else {}
        self._compiled[region] = _Compiled(inputs.version, inputs.raw, self.learning.clock(),
                                           compiled, Delta.between(before, compiled.clusters))
        self.compiles += 1
        return compiled

    def relearn_due(self, region: str) -> bool:
        """Recompile the region between publishes: ``learn_every_s`` since its last compile
        and something learned (or to decay) since, or a slow-start step of a deployment that
        came back (``returns.py``)."""
        cached = self._compiled.get(region)
        now = self.learning.clock()
        return cached is not None and (
            self.returns.due(region, now)
            or (self.learning.stale(region) and now - cached.at >= self.learn_every_s))

    def relearn_wait_s(self, region: str) -> float:
        """How long a stream's timer sleeps before asking ``relearn_due`` again: to the
        region's next slow-start step while a deployment ramps, else ``learn_every_s``."""
        step = self.returns.wait_s(region, self.learning.clock())
        return self.learn_every_s if step is None else min(self.learn_every_s,
                                                           max(step, 0.01))
