"""Telemetry ingest: an agent's message of reports into the fleet state, cheaply.

At 10,000 GPUs placement takes 10,000 reports a second on one event loop, so what one report
costs is what placement can keep up with (``python -m benchmarks.controlplane_cpu``). A
report's GPU readings are converted to ``GpuState`` only when they differ from the
backend's previous report (compared as serialised bytes, ~1 µs a GPU, against ~10 µs for
the conversion, the hold carry and the hardware verdict); byte-identical readings reuse
the previous conversion, and ``FleetState`` then reuses its hardware verdict as well.
Counters always go through ``FleetState.ingest``: they move in every report of a busy
backend, and its load estimates are derived from them. A number no GPU can have in new
readings (``validate.clean_gpus``: a NaN temperature, memory used over total) is read as a
field the GPU does not report: logged once per backend and field, counted
(``dropped_fields``), never converted; the report's counters are still used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from placement.errors import InvalidRequest
from placement.fleet import FleetState, TelemetrySnapshot
from placement.hardware import GpuState
from services.api.switchyard.v1 import telemetry_pb2
from services.convert import gpu_from_pb, snapshot_from_pb
from services.placement.ownership import TelemetryOwners
from services.placement.plausible import Refusal, check
from services.placement.validate import clean_gpus

log = structlog.get_logger("switchyard.placement")


@dataclass(slots=True)
class Readings:
    """A backend's GPU readings from its last used report, as sent and as converted."""

    sent: Sequence[telemetry_pb2.GpuReading]
    unix_ms: int
    key: tuple[bytes, ...]  # each reading serialised: equal bytes, equal readings
    converted: tuple[GpuState, ...]


@dataclass
class Taken:
    """What one message did: reports used, reports another stream owns, and the backends
    whose usability flipped (ready <-> not ready, a hardware verdict: published first)."""

    used: int = 0
    ignored: int = 0
    flipped: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)  # implausible counters, not used


_serialised = telemetry_pb2.GpuReading.SerializeToString


def _usable(signature: tuple[object, ...] | None) -> object:
    """The part of a backend's change signature (``FleetState``) that decides whether its
    rows may be used at all: readiness, the hardware verdict, each variant's readiness
    (None before its first report)."""
    return None if signature is None else signature[0]


class TelemetryIngest:
    """Owns what placement keeps of agents' reports beside the fleet state: who owns each
    backend's telemetry (``TelemetryOwners``) and the last GPU readings (``readings``, for
    ``ListBackends`` and the byte comparison)."""

    def __init__(self, fleet: FleetState, stale_after_s: float) -> None:
        self.fleet = fleet
        self.owners = TelemetryOwners(stale_after_s)
        self.readings: dict[str, Readings] = {}
        # backend id -> (its registration, the variants it serves): statistics of any other
        # model are not kept (an agent naming a new one in each report grew the backend's
        # loads, its learned state and its rebuilds without end)
        self._served: dict[str, tuple[object, frozenset[str]]] = {}
        self.dropped_fields = 0  # GPU numbers no GPU can have, read as unset
        self.not_holder = 0  # reports from a stream without the registrant's lease token
        self._warned: set[tuple[str, str]] = set()
        # backend id -> its last refused report and when it came (``plausible``: a report
        # plausible against it, though not against the last used one, rebases on it)
        self._refused: dict[str, tuple[TelemetrySnapshot, float]] = {}
        self.refused: dict[tuple[str, str], int] = {}  # (backend, reason) -> reports

    def _implausible(self, backend_id: str, agent: str, why: Refusal) -> None:
        n = self.refused[(backend_id, why.reason)] = self.refused.get(
            (backend_id, why.reason), 0) + 1
        if n == 1 or n % 100 == 0:
            log.warning("telemetry_implausible", backend=backend_id, agent=agent,
                        reason=why.reason, detail=why.detail[:300], refused=n,
                        action="report not used")

    def _not_holder(self, backend_id: str, agent: str) -> None:
        self.not_holder += 1
        if self.not_holder == 1 or self.not_holder % 100 == 0:
            log.warning("telemetry_ignored", backend=backend_id, reporter=agent,
                        ignored=self.not_holder,
                        reason="its registrant holds it by a lease token this stream does "
                               "not carry")

    def _dropped(self, backend_id: str, agent: str, dropped: list[str]) -> None:
        self.dropped_fields += len(dropped)
        for what in dropped:
            field = what.split(" ", 1)[0]
            if (backend_id, field) not in self._warned and len(self._warned) < 10_000:
                self._warned.add((backend_id, field))
                log.warning("gpu_reading_impossible", backend=backend_id, agent=agent,
                            field=what[:200], action="read as not reported")

    def forget(self, backend_id: str) -> None:
        self.owners.forget(backend_id)
        self.readings.pop(backend_id, None)
        self._served.pop(backend_id, None)
        self._refused.pop(backend_id, None)

    def take(self, message: telemetry_pb2.TelemetryReport, stream: str, peer: str,
             now: float, taken: Taken, may_report: Callable[[str], bool] | None = None
             ) -> None:
        """Ingest ``message`` and the reports in its ``more`` (an agent's round) into
        ``taken``; a report for an unregistered backend raises ``InvalidRequest`` after
        what came before it was ingested (``taken`` says how much). ``may_report``: whether
        this stream may report a backend (its registrant's lease token,
        ``identity.Registrants.may_report``); a report it may not is ignored and counted, as
        another agent's."""
        backends = self.fleet.backends
        labels: dict[str, str] = {}
        for report in (message, *message.more) if message.more else (message,):
            bid = report.backend_id
            state = backends.get(bid)
            if state is None:
                raise InvalidRequest(f"telemetry for unregistered backend {bid!r}; call "
                                     "RegisterBackend first")
            agent = report.agent_id
            label = labels.get(agent)
            if label is None:
                label = labels[agent] = f"{agent or 'unnamed agent'} @ {peer}"
            if may_report is not None and not may_report(bid):
                taken.ignored += 1
                self._not_holder(bid, label)
                continue
            if not self.owners.admit(bid, stream, label, now):
                taken.ignored += 1
                continue
            usable = _usable(state.signature)
            sent: Sequence[telemetry_pb2.GpuReading] = report.gpus
            key = tuple(map(_serialised, sent))
            last = self.readings.get(bid)
            if last is not None and last.key == key:
                gpus, sent = last.converted, last.sent
            else:  # new readings: a number no GPU has (NaN, used > total) is read as unset
                sent, dropped = clean_gpus(report)
                if dropped:
                    self._dropped(bid, label, dropped)
                gpus = tuple(gpu_from_pb(g) for g in sent)
            names = self._served.get(bid)
            if names is None or names[0] is not state.backend:  # (re)registered since
                names = self._served[bid] = (state.backend,
                                             frozenset(v.name for v in state.backend.variants))
            snap = snapshot_from_pb(report, gpus)
            if not snap.variants.keys() <= names[1]:  # a set comparison: ~0.1 µs a report
                snap = replace(snap, variants={k: v for k, v in snap.variants.items()
                                               if k in names[1]})
            if (why := check(state.backend, state.last, state.last_at, snap, now)) is not None:
                base = self._refused.get(bid)
                if base is None or check(state.backend, base[0], base[1], snap, now):
                    self._refused[bid] = (snap, now)
                    taken.refused.append(why)
                    self._implausible(bid, label, why)
                    continue
                # plausible after the refused one: the counters moved once and go on
                state.last, state.last_at = base
                log.info("telemetry_rebased", backend=bid, reason=why.reason)
            self._refused.pop(bid, None)
            self.fleet.ingest(bid, snap, now)
            if last is None:
                self.readings[bid] = Readings(sent, report.unix_ms, key, gpus)
            else:
                last.sent, last.unix_ms, last.key, last.converted = (sent, report.unix_ms,
                                                                     key, gpus)
            taken.used += 1
            if usable is not None and _usable(state.signature) != usable:
                taken.flipped.append(bid)

