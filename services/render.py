"""Plain-text tables for the CLI (status, explain, demo, drills)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def usd_per_1k(cost_usd: float) -> str:
    return f"{cost_usd * 1000:.6f}"


def backend_rows(resp: Any, telemetry_pb2: ModuleType) -> list[list[Any]]:
    from services.api.switchyard.v1 import fleet_pb2

    rows = []
    for s in resp.backends:
        b = s.backend
        source = {telemetry_pb2.TELEMETRY_SOURCE_NVML: "nvml",
                  telemetry_pb2.TELEMETRY_SOURCE_SIMULATED: "simulated"}.get(
                      s.telemetry_source, "none")
        rows.append([b.id, b.region, b.accelerator, b.price_class,
                     fleet_pb2.Availability.Name(s.availability).removeprefix("AVAILABILITY_")
                     .lower(), "yes" if s.healthy else "NO", source,
                     "; ".join(x for x in (s.health_reason, s.penalty_reason) if x)])
    return rows


def route_rows(t: Any) -> list[list[Any]]:
    return [[c.deployment_id, c.region, f"{c.latency_p95_ms:.1f}"
             + (" (observed)" if c.observed else ""), f"{c.rtt_ms:.0f}",
             f"{c.compute_ms:.1f}", usd_per_1k(c.cost_usd), f"{c.spare_capacity:.0f}",
             f"{c.edge_slots or c.concurrency:.2g}/{c.concurrency}",
             c.dropped_reason or c.penalty_reason] for c in t.candidates]


def explain_rows(resp: Any) -> list[list[Any]]:
    return [[e.candidate.deployment_id, e.candidate.region, f"{e.candidate.quality:.2f}",
             f"{e.candidate.latency_p95_ms:.1f}", usd_per_1k(e.candidate.cost_usd),
             "yes" if e.feasible else "no", e.reason] for e in resp.candidates]
