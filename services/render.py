"""Plain-text tables for the CLI (status, explain, demo, drills)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any


def cheaper_by(ours: float, theirs: float, digits: int = 1) -> str:
    """``ours`` against ``theirs`` (> 0) in words: "12.3% lower" or "4.0% higher"."""
    change = 100 * (1 - ours / theirs)
    return f"{abs(change):.{digits}f}% {'lower' if change >= 0 else 'higher'}"


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
        source = _source(s.telemetry_source, telemetry_pb2)
        rows.append([b.id, b.region, b.accelerator, b.price_class,
                     fleet_pb2.Availability.Name(s.availability).removeprefix("AVAILABILITY_")
                     .lower(), "yes" if s.healthy else "NO", source,
                     _owner(s), "; ".join(x for x in (s.health_reason, s.penalty_reason) if x)])
    return rows


def _owner(s: Any) -> str:
    """Whose telemetry placement uses, and how many other agents' reports it ignored."""
    owner = s.telemetry_owner or "-"
    return f"{owner} ({s.telemetry_ignored} ignored from others)" if s.telemetry_ignored else owner


# NVML clocks-event reasons (nvmlClocksEventReason*), as NVIDIA names them.
CLOCK_EVENTS = {0x1: "GpuIdle", 0x2: "ApplicationsClocksSetting", 0x4: "SwPowerCap",
                0x8: "HwSlowdown", 0x10: "SyncBoost", 0x20: "SwThermalSlowdown",
                0x40: "HwThermalSlowdown", 0x80: "HwPowerBrakeSlowdown",
                0x100: "DisplayClockSetting"}
GIB = 1024 ** 3


def _opt(msg: Any, name: str, fmt: str) -> str:
    return format(getattr(msg, name), fmt) if msg.HasField(name) else "n/a"


def _memory(g: Any) -> str:
    if not g.HasField("mem_total_bytes"):
        return "n/a"
    used = (g.mem_used_bytes if g.HasField("mem_used_bytes") else
            g.mem_total_bytes - g.mem_free_bytes if g.HasField("mem_free_bytes") else None)
    return ("?" if used is None else f"{used / GIB:.1f}") + f" / {g.mem_total_bytes / GIB:.1f}"


def _clock_events(g: Any) -> str:
    from placement.hardware import THROTTLE_MASK

    if not g.HasField("throttle_reasons"):
        return "n/a"
    bits = g.throttle_reasons
    names = [n + ("!" if bit & THROTTLE_MASK else "") for bit, n in CLOCK_EVENTS.items()
             if bits & bit]
    return ",".join(names) or "none"


def _errors(g: Any) -> str:
    parts = ["LOST"] if g.lost else []
    if g.HasField("ecc_uncorrected_volatile"):
        parts.append(f"ECC uncorr {g.ecc_uncorrected_volatile}")
    if g.xid_events:
        parts.append("XID " + ",".join(str(x) for x in g.xid_events))
    return "; ".join(parts) or "none"


def gpu_rows(resp: Any, telemetry_pb2: ModuleType) -> list[list[Any]]:
    """One row per GPU of every backend, with units, from its last report."""
    rows = []
    for s in resp.backends:
        source = _source(s.telemetry_source, telemetry_pb2)
        for g in s.gpus:
            power = (f"{_opt(g, 'power_w', '.0f')} / {_opt(g, 'power_limit_w', '.0f')}")
            rows.append([s.backend.id, g.index, g.name or "?", _opt(g, "gpu_util_pct", ".0f"),
                         _memory(g), _opt(g, "temperature_c", ".0f"), power,
                         _clock_events(g), _errors(g), source])
    return rows


GPU_HEADERS = ["backend", "gpu", "name", "util %", "mem used / total GiB", "temp °C",
               "power W / limit W", "clock events (! = slowdown)", "errors", "source"]

STATUS_LEGEND = """\
columns of the route tables (one per model and edge region):
  p95 ms      estimated p95 latency of a call from that edge region: rtt + queue + compute
              ("(observed)": the edges' own measurements replaced the estimate)
  rtt ms      network round trip between the edge's region and the deployment's region
              (from the RTT matrix, corrected by what edges measure; emulated locally)
  compute ms  Triton's own compute time per request on that deployment (queue excluded)
  $/1k calls  estimated cost of 1,000 calls: GPU price per second x compute seconds
  spare rps   requests per second the deployment can still take
  edge slots  share / concurrency: how many of the deployment's concurrent slots one edge
              of this region may fill before it expects to queue (placement splits them
              among the edges that send it calls), out of the requests it runs at once
GPU readings: from NVML (source nvml) or derived from Triton's load without a GPU (source
simulated, never measured); n/a = not supported or not reported."""


def _source(value: int, telemetry_pb2: ModuleType) -> str:
    return {telemetry_pb2.TELEMETRY_SOURCE_NVML: "nvml",
            telemetry_pb2.TELEMETRY_SOURCE_SIMULATED: "simulated"}.get(value, "none")


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
