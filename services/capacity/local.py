"""The ``local`` provider: each GPU of a pool is a real tritonserver process on this machine.

A pool is described by a ``BackendConfig`` (its region, accelerator, price class and the
variants its repository holds); every instance gets its own run directory and free ports,
and starts in explicit model-control mode with nothing loaded (the capacity actor loads).

Instances outlive a placement that crashes or is killed (they are its children, not the
mesh's); :func:`reap_leftovers` stops them, from each instance directory's
``endpoints.json``: a new provider on the same root does at construction (the supervisor's
restart of placement), and ``switchyard up`` does when it stops the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import select
import signal
import time
from collections.abc import Mapping

import structlog

from placement.errors import ConfigError
from services.backends.triton import TritonProcess
from services.capacity.provider import Instance
from services.config import BackendConfig, MeshConfig

log = structlog.get_logger("switchyard.capacity")
_KILLED_EXIT_S = 10.0  # how long a SIGKILLed process may take to finish exiting


def _serves(pid: int, repo: pathlib.Path) -> bool:
    """``pid`` is a live tritonserver on ``repo`` (not a recycled pid, not a zombie)."""
    try:
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = {f"--model-repository={repo}".encode(), f"--model-repository={repo.resolve()}".encode()}
    return bool(argv) and argv[0].endswith(b"tritonserver") and bool(want & set(argv))


def _pidfd(pid: int, repo: pathlib.Path) -> int | None:
    """A pidfd of ``pid`` if it is a live tritonserver on ``repo``. Checked after opening, so
    the fd names that very process: a recycled pid is never signalled or waited for."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if _serves(pid, repo):
        return fd
    os.close(fd)
    return None


def _gone(fd: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` until the process behind pidfd ``fd`` has exited entirely
    (every thread; a zombie left to its parent counts as exited)."""
    return bool(select.select([fd], [], [], max(timeout_s, 0.0))[0])


def reap_leftovers(root: pathlib.Path, *, wait_s: float = 10.0) -> list[int]:
    """Stop the tritonservers a previous provider started under ``root`` and left running
    (SIGTERM, then SIGKILL after ``wait_s``); returns their pids once they have exited. Only
    a pid whose command line is a tritonserver on that instance directory's repository is
    signalled.

    Exited means the kernel says so (the pidfd turns readable), not that the command line
    stopped matching: ``/proc/<pid>/cmdline`` reads empty from the moment the process drops
    its memory, while it still closes its files and its other threads exit; returning then
    let a caller see it still alive (a fresh-clone CI run of
    tests/integration/test_capacity_leftovers.py did)."""
    found: list[tuple[int, int]] = []
    for ep in sorted(root.glob("*/endpoints.json")) if root.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            pid = int(json.loads(ep.read_text())["pid"])
            fd = _pidfd(pid, ep.parent / "repo")
            if fd is not None:
                found.append((pid, fd))
    try:
        for _, fd in found:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for pid, fd in found:
            if not _gone(fd, deadline - time.monotonic()):
                log.warning("capacity.leftover_killed", pid=pid, after_s=wait_s)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                _gone(fd, _KILLED_EXIT_S)
    finally:
        for _, fd in found:
            os.close(fd)
    if found:
        log.warning("capacity.reaped_leftover_instances", root=str(root),
                    pids=[p for p, _ in found])
    return [p for p, _ in found]


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
        self.reaped = reap_leftovers(root)  # a crashed predecessor's instances
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
