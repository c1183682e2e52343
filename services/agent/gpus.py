"""The agent's GPU source: NVML when it is there, clearly SIMULATED readings until it is.

:class:`GpuSource` owns the choice and every NVML call:

* NVML calls run on one dedicated thread (``nvml`` executor), never on the event loop: a
  driver call can take milliseconds, and a hung GPU can block for seconds.
* When ``nvmlInit`` fails at start (the driver is not loaded yet, the device plugin has not
  mounted the library yet) the agent starts on simulated readings and retries NVML with
  exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``); the first
  success switches every later report to ``source=nvml`` and logs
  ``agent.gpu_source_switched``.
* ``--gpus`` chooses the GPUs (:func:`parse_gpus`): a pool of indexes or UUIDs shared out
  among the backends in turn (``0,2`` or ``GPU-8f3c...``), and/or a per-backend choice
  (``use1-h100=0+1,use1-t4=GPU-8f3c...``). Default: every GPU, i-th backend on GPU
  ``i % count``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from placement.errors import ConfigError
from services.agent.nvml import NvmlReader, NvmlUnavailable
from services.agent.simulated import SimulatedGpuSource
from services.api.switchyard.v1 import telemetry_pb2
from services.config import BackendConfig

T = TypeVar("T")

NVML = telemetry_pb2.TELEMETRY_SOURCE_NVML
SIMULATED = telemetry_pb2.TELEMETRY_SOURCE_SIMULATED
SOURCE_NAMES = {telemetry_pb2.TELEMETRY_SOURCE_UNSPECIFIED: "unspecified",
                NVML: "nvml", SIMULATED: "simulated"}


@dataclass(frozen=True)
class GpuSelection:
    """``--gpus`` parsed: GPU tokens (an index like ``"1"`` or a UUID like ``"GPU-..."``)."""

    pool: tuple[str, ...] = ()
    per_backend: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def parse_gpus(spec: str) -> GpuSelection:
    """Parse ``--gpus``: comma-separated ``TOKEN`` (pool) or ``BACKEND=TOKEN[+TOKEN...]``."""
    pool: list[str] = []
    per: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        backend, eq, gpus = item.partition("=")
        tokens = tuple(t.strip() for t in (gpus if eq else item).split("+"))
        bad = [t for t in tokens if not (t.isdigit() or t.upper().startswith(("GPU-", "MIG-")))]
        if bad or (eq and not backend.strip()):
            raise ConfigError(f"--gpus {item!r}: expected an index (0), a UUID (GPU-...) or "
                              "BACKEND=GPU[+GPU...]")
        if eq:
            per[backend.strip()] = tokens
        else:
            pool.extend(tokens)
    return GpuSelection(tuple(pool), per)


def resolve_gpus(selection: GpuSelection, backend_ids: Sequence[str], count: int,
                 uuids: Mapping[int, str] | None) -> dict[str, list[int]]:
    """Backend id → GPU indexes. ``uuids`` None = simulated (indexes taken as given)."""
    unknown = sorted(set(selection.per_backend) - set(backend_ids))
    if unknown:
        raise ConfigError(f"--gpus names backends {unknown} that this agent does not run "
                          f"(--backends {list(backend_ids)})")
    by_uuid = {u.upper(): i for i, u in (uuids or {}).items()}

    def index(token: str) -> int:
        if token.isdigit():
            i = int(token)
            if uuids is not None and i >= count:
                raise ConfigError(f"--gpus: GPU {i} does not exist (NVML sees {count} GPUs)")
            return i
        if token.upper() not in by_uuid:
            raise ConfigError(f"--gpus: no GPU has UUID {token!r} (this host: "
                              f"{sorted(by_uuid) or 'none readable'})")
        return by_uuid[token.upper()]

    pool = [index(t) for t in selection.pool] or list(range(count))
    return {b: ([index(t) for t in selection.per_backend[b]] if b in selection.per_backend
                else [pool[i % len(pool)]]) for i, b in enumerate(backend_ids)}


class GpuSource:
    """GPU readings for the agent's backends, from NVML or (labelled) simulated.

    ``nvml``: a pynvml-like module (default the real one). ``sleep`` is injected so tests
    drive the retry without waiting. Read :attr:`source` and :attr:`gpus` after
    :meth:`start`; they change once, when a late NVML comes up.
    """

    def __init__(self, backends: Sequence[BackendConfig], *, nvml: Any = None,
                 simulated: SimulatedGpuSource | None = None,
                 selection: GpuSelection | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 retry_initial_s: float = 1.0, retry_max_s: float = 60.0,
                 agent_id: str = "") -> None:
        self.backends = list(backends)
        self._module = nvml
        self._simulated = simulated
        self._selection = selection or GpuSelection()
        self._sleep = sleep
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._agent_id = agent_id
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nvml")
        self._reader: NvmlReader | None = None
        self._closed_errors = 0  # NvmlReader.errors of readers closed since
        self._retry: asyncio.Task[None] | None = None
        self.source = telemetry_pb2.TELEMETRY_SOURCE_UNSPECIFIED
        self.gpus: dict[str, list[int]] = {}
        self.nvml_attempts = 0

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES[self.source]

    @property
    def nvml_errors(self) -> int:
        """NVML calls that failed and impossible numbers left unset, over every reader this
        source ran (``NvmlReader.errors``)."""
        return self._closed_errors + (self._reader.errors if self._reader is not None else 0)

    @property
    def _log(self) -> Any:
        return structlog.get_logger("switchyard.agent").bind(agent=self._agent_id)

    async def start(self) -> None:
        """Try NVML once; without it go simulated and keep retrying in the background."""
        reason = await self._try_nvml()
        if reason is None:
            return
        self.source = SIMULATED
        self._simulated = self._simulated or SimulatedGpuSource()
        self.gpus = resolve_gpus(self._selection, [b.id for b in self.backends],
                                 len(self.backends), None)
        self._log.warning(
            "agent.gpu_source_simulated", source="simulated", reason=reason,
            retry_in_s=self._retry_initial_s,
            note="NVML unavailable: GPU readings are SIMULATED from Triton load, not "
                 "measured; every report says source=simulated until NVML comes up")
        self._retry = asyncio.create_task(self._retry_nvml(), name="nvml-retry")

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        if self._reader is not None:
            await self._run(self._reader.close)
            self._closed_errors += self._reader.errors
            self._reader = None
        self._executor.shutdown(wait=False)  # a hung driver call must not block the loop

    async def read(self, snaps: Mapping[str, Sequence[telemetry_pb2.ModelStats]]
                   ) -> dict[str, list[telemetry_pb2.GpuReading]]:
        """Backend id → its GPU readings; ``snaps`` gives each backend's Triton statistics.

        Each GPU is read once per call, on the NVML thread, however many backends share it.
        """
        reader = self._reader
        if self.source == NVML and reader is not None:
            wanted = [i for b in self.backends for i in self.gpus[b.id]]
            readings = await self._run(reader.read_many, wanted)
            return {b.id: [readings[i] for i in self.gpus[b.id]] for b in self.backends}
        assert self._simulated is not None
        return {b.id: [self._simulated.read(b.id, i, b.accelerator, b.accelerator_count,
                                            b.variants, snaps.get(b.id, ()))
                       for i in self.gpus[b.id]] for b in self.backends}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _try_nvml(self) -> str | None:
        """Start NVML and take it as the source; the reason it is not usable otherwise."""
        self.nvml_attempts += 1
        reader = NvmlReader(self._module)
        try:
            count = await self._run(reader.start)
        except NvmlUnavailable as exc:
            return str(exc)
        if not count:
            await self._run(reader.close)
            return "NVML initialised but found no GPU"
        try:
            gpus = resolve_gpus(self._selection, [b.id for b in self.backends], count,
                                reader.uuids)
        except ConfigError:
            await self._run(reader.close)
            raise
        was = self.source
        self._reader, self.gpus, self.source = reader, gpus, NVML
        if was == SIMULATED:
            self._log.info("agent.gpu_source_switched", source="nvml", was="simulated",
                           gpus=count, attempts=self.nvml_attempts, mapping=gpus)
        else:
            self._log.info("agent.gpu_source_nvml", source="nvml", gpus=count, mapping=gpus)
        return None

    async def _retry_nvml(self) -> None:
        delay = self._retry_initial_s
        while True:
            await self._sleep(delay)
            try:
                reason = await self._try_nvml()
            except ConfigError as exc:
                self._log.error("agent.gpus_invalid", source="simulated", error=exc.message,
                                note="NVML came up but --gpus does not match this host; "
                                     "staying on SIMULATED readings")
                return
            if reason is None:
                return
            delay = min(self._retry_max_s, delay * 2)
            self._log.debug("agent.nvml_retry", source="simulated", reason=reason,
                            attempt=self.nvml_attempts, next_in_s=delay)
