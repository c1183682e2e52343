"""Warm restarts: what a placement replica has learned, kept in its run dir.

A replica learns compute and queue estimates, call rates and busy fractions (from telemetry
windows), observed p95s and RTT corrections (from edges), the call rates edges send each
deployment (slot shares), GPU holds (XIDs, memory pressure: the hardware ejections) and
operator availability (drain, cordon). Without this file a restarted replica routes on
priors until reports come back; with it, the first rebuild after start is the tables it had.

The file is JSON, ``{"format": 1, ...}``, written atomically (temporary file + rename)
every ``EVERY_S`` and on shutdown, read once at start. A file of another format, or one
that does not parse, is ignored with a warning: the replica starts cold, as before.
Monotonic times are stored as ages and re-based at load, the downtime included, so holds
and observations expire as if the replica had never stopped. Backends are stored with
their registration: agents re-register when they reconnect, and until then the restored
row keeps routing as it did (a backend removed while the replica was down comes back with
its last state until its agent's absence shows; deregister it again if so).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import structlog

from placement.fleet import (
    BackendState,
    FleetState,
    ObservedLatency,
    TelemetrySnapshot,
    VariantLoad,
    VariantStats,
)
from placement.hardware import GpuState
from placement.model import Availability, Backend
from services.api.switchyard.v1 import fleet_pb2
from services.convert import backend_from_pb, backend_to_pb
from services.placement.validate import MAX_SAMPLES

log = structlog.get_logger("switchyard.placement.persist")

FORMAT = 1
EVERY_S = 10.0
CHUNK = 500  # backends gathered and encoded per turn of the event loop (~10 ms)


def path_for(run_dir: pathlib.Path, port: int) -> pathlib.Path:
    """One file per replica: replicas of one mesh share the run dir, not their state."""
    return run_dir / f"placement-{port}.learned.json"


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)


def _at(now: float, age: float | None) -> float | None:
    return None if age is None else now - age


# Dataclasses are stored as dicts of these fields (``asdict`` deep-copies: too slow for 10k).
_GPU = tuple(f.name for f in fields(GpuState))
_STATS = tuple(f.name for f in fields(VariantStats))
_LOAD = tuple(f.name for f in fields(VariantLoad))


def _plain(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in names}


def _gpu(g: GpuState, now: float) -> dict[str, Any]:
    d = _plain(g, _GPU)
    d["xid_at"], d["mem_pressure_at"] = _age(now, g.xid_at), _age(now, g.mem_pressure_at)
    return d


def _snapshot(s: TelemetrySnapshot, now: float) -> dict[str, Any]:
    return {"ready": s.ready, "simulated": s.simulated, "inflight": s.inflight,
            "sent_ms": s.sent_ms, "gpus": [_gpu(g, now) for g in s.gpus],
            "variants": {k: _plain(v, _STATS) for k, v in s.variants.items()}}


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Without the cyclic collector: building or reading 10k backends' state allocates enough
    containers to trigger full collections over the whole heap, which took more time than the
    work itself (10k backends: dump 1.3 -> 0.8 s, restore 3.7 -> 1.1 s). For synchronous code
    on the event loop's thread only; nothing here makes cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def dump(fleet: FleetState, now: float, wall: float) -> dict[str, Any]:
    """The learned state of ``fleet`` as plain data (``now`` monotonic, ``wall`` unix)."""
    with no_gc():
        return _dump(fleet, now, wall)


def _registration(b: Backend) -> str:
    return base64.b64encode(backend_to_pb(b).SerializeToString()).decode()


def _backend(s: BackendState, now: float, registration: str) -> dict[str, Any]:
    return {"backend": registration, "availability": int(s.availability),
            "last": None if s.last is None else _snapshot(s.last, now),
            "last_age_s": _age(now, s.last_at),
            "loads": {k: _plain(v, _LOAD) for k, v in s.loads.items()}}


def _edges(fleet: FleetState, now: float) -> dict[str, Any]:
    """What edges taught the fleet: observed p95s, RTTs, call rates, when each edge reported."""
    return {
        "observed": [[r, d, o.samples, o.p95_ms, _age(now, o.at)]
                     for (r, d), o in fleet.observed.items()],
        "rtt": [[e, r, ms] for (e, r), ms in fleet.rtt_observed.items()],
        "use": [[d, r, e, rate, _age(now, at)] for d, by_edge in fleet.use.items()
                for (r, e), (rate, at) in by_edge.items()],
        "edges_seen": [[r, e, _age(now, at)] for (r, e), at in fleet.edges_seen.items()]}


def _dump(fleet: FleetState, now: float, wall: float) -> dict[str, Any]:
    backends = {bid: _backend(s, now, _registration(s.backend))
                for bid, s in fleet.backends.items()}
    return {"format": FORMAT, "written_unix": wall, "backends": backends, **_edges(fleet, now)}


async def dump_json(fleet: FleetState, now: float, wall: float, chunk: int = CHUNK,
                    registrations: dict[str, tuple[Backend, str]] | None = None) -> str:
    """``dump`` as the JSON ``write`` makes of it, gathered and encoded ``chunk`` backends per
    turn of the event loop: at 10,000 backends the whole of it held placement's loop for
    0.2-0.9 s every ``EVERY_S`` (the JSON encoder holds the GIL on a thread as well), and a
    readiness flip arriving then waited that long. Ages are taken against ``now``, so a
    backend reported while this ran counts as just reported. ``registrations``: the encoded
    registrations of earlier calls, kept by the caller (a registration rarely changes)."""
    known = {} if registrations is None else registrations
    parts, bids = [], list(fleet.backends)
    for i in range(0, len(bids), chunk):
        if i:
            await asyncio.sleep(0)
        with no_gc():
            part = {}
            for bid in bids[i:i + chunk]:
                s = fleet.backends.get(bid)
                if s is None:  # deregistered meanwhile
                    continue
                reg = known.get(bid)
                if reg is None or reg[0] is not s.backend:
                    reg = known[bid] = (s.backend, _registration(s.backend))
                part[bid] = _backend(s, now, reg[1])
            if part:
                parts.append(json.dumps(part, separators=(",", ":"))[1:-1])
    for bid in [b for b in known if b not in fleet.backends]:
        del known[bid]
    await asyncio.sleep(0)
    head = json.dumps({"format": FORMAT, "written_unix": wall}, separators=(",", ":"))[:-1]
    rest = json.dumps(_edges(fleet, now), separators=(",", ":"))[1:]
    return f'{head},"backends":{{{",".join(parts)}}},{rest}'


def _gpu_from(d: dict[str, Any], now: float) -> GpuState:
    g = GpuState(**{**d, "xid_events": tuple(d["xid_events"]),
                    "held_xids": tuple(d["held_xids"])})
    return replace(g, xid_at=_at(now, d["xid_at"]), mem_pressure_at=_at(now, d["mem_pressure_at"]))


def restore(fleet: FleetState, data: dict[str, Any], now: float, wall: float) -> int:
    """Put ``data`` (from :func:`dump`) back into ``fleet``; returns the backends restored.

    Backends the fleet does not have yet are registered as stored; learned state replaces
    whatever the fleet holds for them (a fresh replica holds nothing)."""
    with no_gc():
        return _restore(fleet, data, now, wall)


def _restore(fleet: FleetState, data: dict[str, Any], now: float, wall: float) -> int:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, this placement reads {FORMAT}")
    down = max(0.0, wall - float(data["written_unix"]))  # stored ages grew by this much

    def ago(age: float) -> float:
        return now - age - down

    for bid, b in data["backends"].items():
        if bid not in fleet.backends:
            fleet.register(backend_from_pb(fleet_pb2.Backend.FromString(
                base64.b64decode(b["backend"]))))
        s = fleet.backends[bid]
        s.availability = Availability(b["availability"])
        if (last := b["last"]) is not None:
            s.last = TelemetrySnapshot(
                last["ready"], last["simulated"],
                tuple(_gpu_from(g, now - down) for g in last["gpus"]),
                {k: VariantStats(**v) for k, v in last["variants"].items()},
                last["inflight"], last["sent_ms"])
        s.last_at = None if b["last_age_s"] is None else ago(b["last_age_s"])
        s.loads = {k: VariantLoad(**v) for k, v in b["loads"].items()}
        s.signature = None
    # what ReportObservations refuses (validate.check_observations) is not restored either:
    # a state from a placement that took it before, or a buggy peer's
    for r, d, samples, p95, age in data["observed"]:
        if _sane(p95, age) and 0 <= samples <= MAX_SAMPLES:
            fleet.observed[(r, d)] = ObservedLatency(samples, p95, ago(age))
    for e, r, ms in data["rtt"]:
        if _sane(ms):
            fleet.rtt_observed[(e, r)] = ms
    for d, r, e, rate, age in data["use"]:
        if _sane(rate, age):
            fleet.use.setdefault(d, {})[(r, e)] = (rate, ago(age))
    for r, e, age in data["edges_seen"]:
        fleet.edges_seen[(r, e)] = ago(age)
    fleet.version += 1
    fleet.all_dirty = True
    return len(data["backends"])


def _sane(*numbers: float) -> bool:
    """Each a finite, non-negative number (JSON reads NaN and Infinity)."""
    return all(isinstance(x, int | float) and 0.0 <= x < math.inf for x in numbers)


def write(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(data, separators=(",", ":")))  # the C encoder


def write_text(path: pathlib.Path, text: str) -> None:
    """``write`` of JSON already encoded (``dump_json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def read(path: pathlib.Path) -> dict[str, Any] | None:
    """The state in ``path`` if it holds one of this format (not restored yet), else None."""
    try:
        with no_gc():
            data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("learned_state_ignored", path=str(path), error=repr(exc))
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        log.warning("learned_state_ignored", path=str(path),
                    error=f"format {data.get('format') if isinstance(data, dict) else None!r}, "
                          f"this placement reads {FORMAT}")
        return None
    return data


def learned_unix(data: dict[str, Any]) -> float:
    """When the newest thing in ``data`` was learned (unix s; -inf if it holds no telemetry or
    observation): of two states, the one learned last is the one to restart from."""
    ages = [b["last_age_s"] for b in data["backends"].values() if b["last_age_s"] is not None]
    ages += [o[4] for o in data["observed"] if o[4] is not None]
    return float(data["written_unix"]) - min(ages) if ages else -math.inf


def load(fleet: FleetState, path: pathlib.Path, now: float) -> int:
    """Restore ``path`` into ``fleet`` if it holds a usable file; the backends restored."""
    data = read(path)
    if data is None:
        return 0
    try:
        n = restore(fleet, data, now, time.time())
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("learned_state_ignored", path=str(path), error=repr(exc),
                    action="starting cold: estimates come back with the next reports")
        return 0
    log.info("learned_state_loaded", path=str(path), backends=n)
    return n


class Keeper:
    """Saves the fleet's learned state every ``every_s``, within ``tick_s`` of an operator's
    drain/cordon/activate (``FleetState.operator_changes``: an undrain lost to a crash
    between two periods would come back as a drain), and once more at :meth:`stop`."""

    def __init__(self, fleet: FleetState, path: pathlib.Path, clock: Callable[[], float],
                 every_s: float = EVERY_S, tick_s: float = 0.2) -> None:
        self.fleet, self.path, self.clock, self.every_s = fleet, path, clock, every_s
        self.tick_s = tick_s
        self.saves = 0
        self._task: asyncio.Task[None] | None = None
        self._saved_changes = fleet.operator_changes
        self._registrations: dict[str, tuple[Backend, str]] = {}  # dump_json's, kept

    def save(self) -> None:
        write(self.path, dump(self.fleet, self.clock(), time.time()))
        self.saves += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(self.tick_s, self.every_s))
            changes = self.fleet.operator_changes
            if changes == self._saved_changes and time.monotonic() - last < self.every_s:
                continue
            last = time.monotonic()
            try:
                # Gathered and encoded on the loop in pieces (each backend's state whole),
                # written on a thread: a large fleet's file does not hold the loop.
                text = await dump_json(self.fleet, self.clock(), time.time(),
                                       registrations=self._registrations)
                await asyncio.to_thread(write_text, self.path, text)
                self.saves += 1
                self._saved_changes = changes
            except OSError as exc:  # a full disk must not stop placement
                log.warning("learned_state_not_saved", path=str(self.path), error=repr(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            self.save()
        except OSError as exc:
            log.warning("learned_state_not_saved", path=str(self.path), error=repr(exc))
