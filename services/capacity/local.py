"""The ``local`` provider: each GPU of a pool is a real tritonserver process on this machine.

A pool is described by a ``BackendConfig`` (its region, accelerator, price class and the
variants its repository holds); every instance gets its own run directory and free ports,
and starts in explicit model-control mode with nothing loaded (the capacity actor loads).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Mapping

from placement.errors import ConfigError
from services.backends.triton import TritonProcess
from services.capacity.provider import Instance
from services.config import BackendConfig, MeshConfig


class LocalProvider:
    """Starts and stops tritonserver processes per pool."""

    def __init__(self, cfg: MeshConfig, pools: Mapping[str, BackendConfig],
                 root: pathlib.Path, *, ready_timeout_s: float = 60.0) -> None:
        for pool, backend in pools.items():
            if backend.grpc_port or backend.metrics_port:
                raise ConfigError(f"local pool {pool!r}: backend {backend.id!r} has a fixed "
                                  "port; instances need port 0 (one free port each)")
        self.cfg = cfg
        self.pools = dict(pools)
        self.root = root
        self.ready_timeout_s = ready_timeout_s
        self._procs: dict[str, TritonProcess] = {}
        self._instances: dict[str, list[Instance]] = {p: [] for p in pools}
        self._serial = 0

    def instances(self, pool: str) -> list[Instance]:
        return list(self._instances[pool])

    async def add(self, pool: str, count: int) -> list[Instance]:
        if pool not in self.pools:
            raise ConfigError(f"pool {pool!r} is not one of {sorted(self.pools)}")
        added = []
        for _ in range(count):
            self._serial += 1
            iid = f"{pool}-{self._serial}"
            proc = TritonProcess.for_backend(self.cfg, self.pools[pool], self.root / iid,
                                             load=())
            self._procs[iid] = proc
            proc.start()
            try:
                await proc.wait_ready_async(self.ready_timeout_s)
            except BaseException:
                await proc.stop_async()
                del self._procs[iid]
                raise
            inst = Instance(iid, pool, proc.endpoint, proc.metrics_url)
            self._instances[pool].append(inst)
            added.append(inst)
        return added

    async def remove(self, instance: Instance) -> None:
        proc = self._procs.pop(instance.id)
        self._instances[instance.pool].remove(instance)
        await proc.stop_async()

    async def close(self) -> None:
        """Stop every instance this provider started."""
        await asyncio.gather(*(self.remove(i) for p in list(self._instances)
                               for i in list(self._instances[p])))
