"""The prose under ``benchmarks.controlplane``'s table, computed from its rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.common import percentile

if TYPE_CHECKING:
    from benchmarks.controlplane import Level


def _p99(lv: Level) -> str:
    return "timeouts" if lv.timeouts else f"{percentile(sorted(lv.delays_ms), 99):,.0f} ms"


def _kept(lv: Level) -> float:
    return lv.ingest_per_s / lv.target_per_s


# Issue 15's ingest and propagation targets are set at this fleet size (20,000 GPUs is
# judged with two replicas: benchmarks.controlplane_shards); without it, the largest level.
TARGET_GPUS = 10_000


def notes(levels: list[Level], warm_max_s: float) -> list[str]:
    """``warm_max_s``: the longest wait for a steady state before the window opens."""
    now = [lv for lv in levels if lv.label != "before"]
    worst = next((lv for lv in now if lv.gpus == TARGET_GPUS), now[-1])
    p99 = percentile(sorted(worst.delays_ms), 99)
    prop_met = worst.timeouts == 0 and p99 <= 500
    out = [
        "One placement process (`python -m services.cli placement`, 1 core at most: one "
        "event loop), one agents process (8 StreamTelemetry streams multiplexing every "
        "backend's 1 Hz report; `--per-message 8`: each message is one simulated 8-GPU "
        "agent's round in `TelemetryReport.more`), this process holding the edges' "
        "WatchRoutes streams and the probe; all on the same 2-core machine, shared with "
        "other work while measured (host load column), so the load generators and other "
        "processes compete with placement for CPU. Reports carry counters read at send "
        "time. The measured window opens once two reports per backend were ingested (start-up "
        "column) and no backlog is draining (two 2 s ingest rates in a row both within 3 % "
        "of offered or both below it, and no changed backend's rows left to rebuild: "
        "`switchyard_placement_route_backlog_backends` 0), at "
        f"most {warm_max_s:.0f} s after the edges connect (`CP_WARM_MAX_S`): a backend's "
        "first two reports change its rows (first estimates, first rates), later ones only "
        "when load does; reports buffered "
        "in transport while placement was behind would otherwise count as sustained.",
        "Propagation: time from writing the probe report to the moment the last of the "
        "edges received a table showing the change; p99 of 8 changes is the maximum. A "
        "change not seen by every edge within the timeout (8 s quick, 15 s full) counts as "
        "a timeout; timeouts are reported, never averaged in.",
        "Read propagation together with ingest: when sustained ingest is below offered, "
        "placement is not keeping up — gRPC flow control holds the agents' streams back, "
        "so most reports wait in the agents and the fleet state is seconds old even when a "
        "single flip still propagates quickly.",
    ]
    before = {lv.gpus: lv for lv in levels if lv.label == "before"}
    for lv in now:
        b = before.get(lv.gpus)
        if b is None:
            continue
        out.append(
            f"{lv.gpus:,} GPUs, before → after in one run: ingest {b.ingest_per_s:,.0f} → "
            f"{lv.ingest_per_s:,.0f} reports/s ({100 * _kept(b):.0f} % → "
            f"{100 * _kept(lv):.0f} % of offered), propagation p99 {_p99(b)} → {_p99(lv)}, "
            f"bytes to edges {b.update_mb_per_s:.1f} → {lv.update_mb_per_s:.1f} MB/s, "
            f"placement CPU {b.cpu_pct:.0f} % → {lv.cpu_pct:.0f} %.")
    for lv in levels:
        if _kept(lv) > 1.03:
            out.append(
                f"{lv.gpus:,} GPUs, {lv.label}: more ingested than offered — in the window "
                f"placement was still draining reports buffered while it was behind: it "
                f"ingests at least "
                f"{lv.ingest_per_s:,.0f} reports/s at {lv.cpu_pct:.0f} % CPU, but this row is "
                "not a steady state and its propagation was measured under that backlog.")
    for lv in levels:
        if lv.ended:
            out.append(
                f"{lv.gpus:,} GPUs, {lv.label}: {len(lv.ended)} of {lv.edges} watches ended "
                f"before the changes, so no change could reach every edge (first: "
                f"{lv.ended[0][:160]}); a watch placement has not accepted within 30 s is "
                "cancelled by gRPC (`grpc.server_max_unrequested_time_in_server`).")
    kept = _kept(worst)
    verdict = ("met" if 0.99 <= kept <= 1.03 else "missed" if kept < 0.99
               else "not measured in a steady state")
    out += [
        f"Target — ingest ≥ 99 % of offered at {worst.gpus:,} GPUs: "
        f"{100 * kept:.1f} %: **{verdict}**. "
        f"Target — propagation p99 ≤ 500 ms at {worst.gpus:,} GPUs and {worst.edges} edges: "
        f"{_p99(worst)}: **{'met' if prop_met else 'missed'}**.",
        "How placement keeps up (ARCHITECTURE.md, Control plane): a row is pushed only when "
        "it changed materially (estimates outside a noise band of what was last pushed), "
        "and the fleet's change signature is quantised to match, so 1 Hz load wobble "
        "rebuilds and pushes nothing; rates are derived from the agent's clock, so a "
        "backlog does not fake rate swings; each publish is serialised once per region and "
        "the bytes shared by its watchers (a merge for edges that fell behind too); an "
        "agent's round can come as one message; a scheduled rebuild does at most "
        "1,000 rows (`RouteHub.max_build_rows`), the rest of the backlog in the next "
        "publishes with the event loop free in between, and a backend that turns usable or "
        "unusable in telemetry (the probe's flip) goes out in a publish of its own "
        "within 5 ms (`RouteHub.urgent_s`), waiting for neither the coalescing nor that "
        "backlog; a report costs about half the CPU it did (`services/placement/ingest.py`: "
        "GPU readings byte-identical to the last report are not converted again; "
        "`python -m benchmarks.controlplane_cpu`), and the learned-state file is gathered "
        "500 backends per loop turn instead of holding the loop for the whole fleet.",
        "What is left: the route build and the ingest are pure Python on placement's one "
        "event loop (a dirty backend's rows are rebuilt for every edge region); several "
        "replicas sharing the fleet by region or backend hash (issue 15 item 2) is the way "
        "past one core.",
    ]
    return out
