"""Conversion between ``switchyard.v1`` messages, the config file and placement's own types.

The only place that knows both sides: placement/ never imports generated code.
"""

from __future__ import annotations

import math

from placement.catalog import Catalog
from placement.fleet import TelemetrySnapshot, VariantStats
from placement.hardware import GpuState
from placement.model import Availability, Backend, Candidate, LogicalModel, Variant
from placement.prices import PriceEntry
from placement.token_learning import StreamSeen, TokenSpeed
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, telemetry_pb2
from services.config import MeshConfig


def catalog_from_config(cfg: MeshConfig) -> Catalog:
    models = [LogicalModel(m.name, m.default_slo_ms,
                           tuple(Variant(v.name, m.name, v.quality) for v in m.variants),
                           m.decoupled) for m in cfg.models]
    return Catalog.build({r.name: r.cloud for r in cfg.regions}, models,
                         [(r.a, r.b, r.ms) for r in cfg.rtt])


def backends_from_config(cfg: MeshConfig) -> list[fleet_pb2.Backend]:
    """The backends the static config lists, as registrations."""
    by_variant = {v.name: (m.name, v.quality) for m in cfg.models for v in m.variants}
    return [fleet_pb2.Backend(
        id=b.id, endpoint=b.endpoint, cloud=cfg.region_cloud(b.region), region=b.region,
        accelerator=b.accelerator, accelerator_count=b.accelerator_count,
        price_class=b.price_class, max_concurrency=b.max_concurrency,
        variants=[fleet_pb2.VariantRef(logical_model=by_variant[v][0], variant=v,
                                       quality=by_variant[v][1]) for v in b.variants])
        for b in cfg.backends]


def backend_from_pb(b: fleet_pb2.Backend) -> Backend:
    return Backend(id=b.id, endpoint=b.endpoint, cloud=b.cloud, region=b.region,
                   accelerator=b.accelerator, accelerator_count=b.accelerator_count or 1,
                   price_class=b.price_class or "on-demand",
                   variants=tuple(Variant(v.variant, v.logical_model, v.quality)
                                  for v in b.variants),
                   max_concurrency=b.max_concurrency or 4)


def backend_to_pb(b: Backend) -> fleet_pb2.Backend:
    return fleet_pb2.Backend(
        id=b.id, endpoint=b.endpoint, cloud=b.cloud, region=b.region,
        accelerator=b.accelerator, accelerator_count=b.accelerator_count,
        price_class=b.price_class, max_concurrency=b.max_concurrency,
        variants=[fleet_pb2.VariantRef(logical_model=v.logical, variant=v.name,
                                       quality=v.quality) for v in b.variants])


def price_from_pb(p: fleet_pb2.Price) -> PriceEntry:
    return PriceEntry(p.accelerator, p.cloud, p.region or "*", p.price_class,
                      p.usd_per_gpu_hour, p.source, p.as_of)


def price_to_pb(p: PriceEntry) -> fleet_pb2.Price:
    return fleet_pb2.Price(accelerator=p.accelerator, cloud=p.cloud, region=p.region,
                           price_class=p.price_class, usd_per_gpu_hour=p.usd_per_gpu_hour,
                           source=p.source, as_of=p.as_of)


def gpu_from_pb(g: telemetry_pb2.GpuReading) -> GpuState:
    """One reading, each optional field ``None`` when not reported. Straight-line (no helper
    per field): placement converts every GPU of every report, 10,000 a second at fleet scale."""
    has = g.HasField
    return GpuState(
        index=g.index, lost=g.lost,
        mem_free_bytes=int(g.mem_free_bytes) if has("mem_free_bytes") else None,
        mem_total_bytes=int(g.mem_total_bytes) if has("mem_total_bytes") else None,
        temperature_c=g.temperature_c if has("temperature_c") else None,
        temperature_slowdown_c=(g.temperature_slowdown_c if has("temperature_slowdown_c")
                                else None),
        sm_clock_mhz=int(g.sm_clock_mhz) if has("sm_clock_mhz") else None,
        sm_clock_max_mhz=int(g.sm_clock_max_mhz) if has("sm_clock_max_mhz") else None,
        throttle_reasons=int(g.throttle_reasons) if has("throttle_reasons") else None,
        ecc_uncorrected=(int(g.ecc_uncorrected_volatile) if has("ecc_uncorrected_volatile")
                         else None),
        xid_events=tuple(g.xid_events),
        gpu_util_pct=g.gpu_util_pct if has("gpu_util_pct") else None)


def snapshot_from_pb(r: telemetry_pb2.TelemetryReport,
                     gpus: tuple[GpuState, ...] | None = None) -> TelemetrySnapshot:
    """``gpus``: the report's GPU readings already converted (placement's ingest reuses the
    previous report's when they are byte-identical)."""
    return TelemetrySnapshot(
        ready=r.backend_ready,
        simulated=r.source != telemetry_pb2.TELEMETRY_SOURCE_NVML,
        gpus=tuple(gpu_from_pb(g) for g in r.gpus) if gpus is None else gpus,
        variants={m.variant: VariantStats(m.inference_count, m.execution_count,
                                          m.failure_count, m.queue_ns, m.compute_infer_ns,
                                          m.ready) for m in r.models},
        inflight=r.inflight, sent_ms=r.unix_ms)


def candidate_to_pb(c: Candidate) -> placement_pb2.Candidate:
    return placement_pb2.Candidate(
        deployment_id=c.deployment_id, backend_id=c.backend_id, endpoint=c.endpoint,
        variant=c.variant, region=c.region, cloud=c.cloud, accelerator=c.accelerator,
        quality=c.quality, latency_p95_ms=round(c.latency_p95_ms, 2),
        rtt_ms=round(c.rtt_ms, 2), queue_ms=round(c.queue_ms, 2),
        compute_ms=round(c.compute_ms, 2), cost_usd=float(f"{c.cost_usd:.4g}"),
        spare_capacity=round(c.spare_capacity, 1), observed=c.observed,
        dropped_reason=c.dropped_reason, availability=int(c.availability),
        penalty_reason=c.penalty_reason, concurrency=c.concurrency,
        edge_slots=round(c.edge_slots, 2),
        tokens=token_speed_to_pb(c.tokens) if c.tokens is not None else None)


def candidate_from_pb(c: placement_pb2.Candidate) -> Candidate:
    return Candidate(
        deployment_id=c.deployment_id, backend_id=c.backend_id, endpoint=c.endpoint,
        variant=c.variant, region=c.region, cloud=c.cloud, accelerator=c.accelerator,
        quality=c.quality, latency_p95_ms=c.latency_p95_ms, rtt_ms=c.rtt_ms,
        queue_ms=c.queue_ms, compute_ms=c.compute_ms, cost_usd=c.cost_usd,
        spare_capacity=c.spare_capacity, observed=c.observed,
        dropped_reason=c.dropped_reason,
        availability=Availability(c.availability or Availability.ACTIVE),
        penalty_reason=c.penalty_reason, concurrency=c.concurrency or 1,
        edge_slots=c.edge_slots,
        tokens=token_speed_from_pb(c.tokens) if c.HasField("tokens") else None)


def token_speed_to_pb(t: TokenSpeed) -> placement_pb2.TokenSpeed:
    return placement_pb2.TokenSpeed(
        prefill_ms_per_token=t.prefill_ms_per_token, tpot_base_ms=t.tpot_base_ms,
        tpot_per_stream_ms=t.tpot_per_stream_ms, usd_per_1m_input=t.usd_per_1m_input,
        usd_per_1m_output=t.usd_per_1m_output)


def token_speed_from_pb(t: placement_pb2.TokenSpeed) -> TokenSpeed:
    return TokenSpeed(t.prefill_ms_per_token, t.tpot_base_ms, t.tpot_per_stream_ms,
                      t.usd_per_1m_input, t.usd_per_1m_output)


def stream_seen_to_pb(s: StreamSeen) -> telemetry_pb2.StreamObservation:
    return telemetry_pb2.StreamObservation(
        prefill_ms_per_token=s.prefill_ms_per_token, tpot_base_ms=s.tpot_base_ms,
        tpot_per_stream_ms=s.tpot_per_stream_ms, weight=s.weight, attempts=s.attempts,
        tokens_in=s.tokens_in, tokens_out=s.tokens_out, input_usd=s.input_usd,
        output_usd=s.output_usd)


def stream_seen_from_pb(s: telemetry_pb2.StreamObservation) -> StreamSeen:
    """An edge's stream report; negative or non-finite numbers (a broken edge) count as 0."""
    def ok(x: float) -> float:
        return x if math.isfinite(x) and x > 0 else 0.0

    return StreamSeen(ok(s.prefill_ms_per_token), ok(s.tpot_base_ms), ok(s.tpot_per_stream_ms),
                      ok(s.weight), s.attempts, s.tokens_in, s.tokens_out, ok(s.input_usd),
                      ok(s.output_usd))
