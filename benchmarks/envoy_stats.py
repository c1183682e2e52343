"""Envoy's own counters per call, for ``benchmarks.dataplane --stats`` (issue 12).

Around each measured point of an Envoy target the benchmark reads the admin ``/stats`` (JSON)
before and after; the difference, divided by the downstream requests Envoy counted in between
(the point's warm-up calls included, so the ratio needs no guess of how many calls were
sent), says what one call made Envoy do upstream: new connections (a pool keyed by
something per call would open one per call), requests and retries per call, active health
checks, bytes each way, access-log entries and the bytes sent to placement. Counters are
matched by their suffix and summed over clusters, so a plain Envoy's ``triton`` cluster and
Switchyard's ``dep_*`` clusters and aggregate read alike; placement's own cluster (the ADS
and access-log streams) is kept apart.

Beside the counters: placement's CPU per call (the access-log entries it decodes, not billed
to the proxy) and Triton's CPU as a share of a core over the window. Triton's CPU per call
depends on the gap between calls, not only on what each call carries
(``benchmarks.triton_pacing``): read it with the point's rps.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from benchmarks.common import md_table

PLACEMENT_CLUSTER = "placement"  # services.xds.resources: the ADS / access-log cluster

Snapshot = dict[str, float]


def read(admin_port: int, timeout: float = 5.0) -> Snapshot:
    """Every counter and gauge of the Envoy whose admin listens on ``admin_port``."""
    url = f"http://127.0.0.1:{admin_port}/stats?format=json"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        stats = json.loads(r.read())["stats"]
    return {s["name"]: float(s["value"]) for s in stats
            if isinstance(s.get("value"), (int, float))}


def _cluster(name: str) -> str | None:
    """The cluster a ``cluster.<name>.<stat>`` belongs to (names may hold dots: the stat
    is everything after the last one we know)."""
    if not name.startswith("cluster."):
        return None
    return name[len("cluster."):].rsplit(".", 1)[0]


def _sum(d: Mapping[str, float], suffix: str, placement: bool = False) -> float:
    """``suffix`` summed over the clusters (placement's alone when ``placement``)."""
    total = 0.0
    for k, v in d.items():
        c = _cluster(k)
        if c is None or not k.endswith("." + suffix):
            continue
        if c.endswith(".health_check"):  # cluster.<c>.health_check.attempt
            c = c[: -len(".health_check")]
        if (c == PLACEMENT_CLUSTER) == placement:
            total += v
    return total


def _http(d: Mapping[str, float], suffix: str) -> float:
    """``http.<prefix>.<suffix>`` summed over the listeners' connection managers (not the
    admin's)."""
    return sum(v for k, v in d.items() if k.startswith("http.") and not
               k.startswith("http.admin.") and k.endswith("." + suffix)
               and k.count(".") == 2)


# (column, how to read it from a difference of two snapshots)
COUNTERS: tuple[tuple[str, str, bool], ...] = (
    ("upstream rq", "upstream_rq_total", False),
    ("new upstream cx", "upstream_cx_total", False),
    ("HTTP/2 upstream cx", "upstream_cx_http2_total", False),
    ("retries", "upstream_rq_retry", False),
    ("health checks", "health_check.attempt", False),
    ("upstream tx B", "upstream_cx_tx_bytes_total", False),
    ("upstream rx B", "upstream_cx_rx_bytes_total", False),
    ("to placement B", "upstream_cx_tx_bytes_total", True),
)


def difference(before: Snapshot, after: Snapshot) -> Snapshot:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


@dataclass
class Tally:
    """One (target, concurrency)'s differences summed over rounds, and its side CPU."""

    calls: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    placement_cpu_s: float = 0.0
    triton_share: list[float] = field(default_factory=list)  # of a core, per round

    def add(self, diff: Snapshot, placement_cpu_s: float, triton_share: float) -> None:
        self.calls += _http(diff, "downstream_rq_total")
        for col, suffix, placement in COUNTERS:
            self.sums[col] = self.sums.get(col, 0.0) + _sum(diff, suffix, placement)
        self.sums["downstream tx B"] = (self.sums.get("downstream tx B", 0.0)
                                        + _http(diff, "downstream_cx_tx_bytes_total"))
        self.sums["access-log entries"] = (self.sums.get("access-log entries", 0.0)
                                           + diff.get("access_logs.grpc_access_log"
                                                      ".logs_written", 0.0))
        self.placement_cpu_s += placement_cpu_s
        self.triton_share.append(triton_share)

    def per_call(self, col: str) -> float:
        return self.sums.get(col, 0.0) / self.calls if self.calls else float("nan")


COLUMNS = (*(c for c, _, _ in COUNTERS[:5]), "access-log entries", "upstream tx B",
           "upstream rx B", "downstream tx B", "to placement B")


def table(tallies: Mapping[tuple[str, int], Tally], rps: Mapping[tuple[str, int], float]
          ) -> str:
    """Per (target, concurrency): each counter per downstream call, placement's CPU per
    call and Triton's share of a core (median over rounds), with the point's rps."""
    rows: list[Sequence[object]] = []
    for (name, conc), t in sorted(tallies.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        share = sorted(t.triton_share)[len(t.triton_share) // 2] if t.triton_share else 0.0
        rows.append([name, conc, int(t.calls), *(f"{t.per_call(c):.3f}" for c in COLUMNS[:6]),
                     *(f"{t.per_call(c):.0f}" for c in COLUMNS[6:]),
                     f"{t.placement_cpu_s / t.calls * 1e6:.0f}" if t.calls else "–",
                     f"{rps.get((name, conc), 0.0):.0f}", f"{100 * share:.0f} %"])
    return md_table(["target", "conc", "downstream rq", *(f"{c}/call" for c in COLUMNS),
                     "placement CPU µs/call", "rps", "Triton CPU, of a core"], rows,
                    "l" + "r" * (len(COLUMNS) + 5))
