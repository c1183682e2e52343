"""Triton statistics of the instances the capacity loop started, read by placement itself.

A node agent reports the backends its config lists; an instance the local provider started
is not one of them. Without statistics its route rows keep the prior compute estimate (a
quarter of the SLO), which prices the new deployment far above what it costs, so edges would
not use it. Every ``observe_s`` this reads each routed instance's Triton statistics with the
agent's own reader (:class:`services.agent.triton_stats.TritonStatsReader`) and ingests them
as a telemetry report would be, counted from the statistics the warm-up left after its cold
calls (:attr:`ModelControl.baselines`), so the first price is a warm one. No GPU readings
come with them (no NVML here), so the reports are labelled simulated, as an agent without
NVML labels its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from services.agent.triton_stats import TritonStatsReader
from services.api.switchyard.v1 import telemetry_pb2
from services.capacity.model_control import Baselines
from services.capacity.provider import Instance
from services.convert import snapshot_from_pb
from services.placement.server import PlacementService

AGENT_ID = "placement capacity loop (Triton statistics, no NVML)"
COUNTERS = ("inference_count", "execution_count", "success_count", "failure_count",
            "queue_ns", "compute_infer_ns", "compute_input_ns", "compute_output_ns")


class InstanceTelemetry:
    def __init__(self, service: PlacementService,
                 routed: Callable[[], Mapping[str, tuple[Instance, frozenset[str]]]],
                 wall: Callable[[], float] = time.time,
                 baselines: Baselines | None = None) -> None:
        """``routed``: instance id → (instance, variants in the route tables);
        ``baselines``: counters to count from (the warm-up's cold calls left out)."""
        self.service = service
        self.routed = routed
        self.wall = wall
        self.baselines = baselines if baselines is not None else {}
        self._readers: dict[str, tuple[frozenset[str], TritonStatsReader]] = {}

    async def poll(self) -> None:
        routed = self.routed()
        for iid in [i for i in self._readers if i not in routed]:
            await self._readers.pop(iid)[1].close()
        took = 0
        for iid, (inst, variants) in sorted(routed.items()):
            have = self._readers.get(iid)
            if have is None or have[0] != variants:
                if have is not None:
                    await have[1].close()
                have = self._readers[iid] = (variants, TritonStatsReader(
                    inst.endpoint, sorted(variants), metrics_url=inst.metrics_url))
            snap = await have[1].read()
            if iid not in self.service.fleet.backends:  # unrouted while we read
                continue
            report = telemetry_pb2.TelemetryReport(
                backend_id=iid, agent_id=AGENT_ID,
                source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED,
                unix_ms=int(self.wall() * 1000),
                models=[self._since_baseline(iid, m) for m in snap.models],
                backend_ready=snap.ready, inflight=snap.inflight)
            self.service.fleet.ingest(iid, snapshot_from_pb(report), self.service.clock())
            took += 1
        if took:
            self.service.hub.changed()

    def _since_baseline(self, iid: str, m: telemetry_pb2.ModelStats
                        ) -> telemetry_pb2.ModelStats:
        """Counters from the baseline on (a constant offset: windows between reports keep
        their deltas; the first report's totals leave the cold calls out)."""
        b = self.baselines.get((iid, m.variant))
        if b is None or any(getattr(m, f) < getattr(b, f) for f in COUNTERS):
            # none, or Triton restarted (any counter below its baseline: a count from it
            # would be negative, which a uint64 field refuses with ValueError)
            return m
        out = telemetry_pb2.ModelStats()
        out.CopyFrom(m)
        for f in COUNTERS:
            setattr(out, f, getattr(m, f) - getattr(b, f))
        return out

    async def close(self) -> None:
        for _, reader in self._readers.values():
            await reader.close()
        self._readers.clear()
