"""Control plane with Envoy (delta ADS) edges: ingest, placement CPU, propagation, bytes.

    python -m benchmarks.controlplane_ads [--quick] [--levels 1000,5000,10000] [--before DIR]

``benchmarks.controlplane``'s run (one real placement process, simulated agents for every
GPU's 1 Hz report, a probe backend flipped ready / not ready), with its edges replaced by
simulated Envoys: each is a ``DeltaAggregatedResources`` stream (``xds-protos``) of a node in
one of the mesh's regions (``node.cluster``, ``listen_port`` in its metadata, as
``services.edge.envoy.bootstrap`` declares one) that subscribes to clusters, listeners and its
region's route configuration and ACKs every response, as Envoy does. Simulated: no Envoy
process applies the config (``benchmarks.xds_push`` measures a real one on a small fleet).

- **propagation**: from the probe's flip to the last edge's response that carries its
  region's default aggregate cluster (``model:chat``) without or with the probe again (the
  response Envoy would ACK and apply); the probe reports half the fleet's compute time, so
  it heads every region's default order (``probe_report``);
- **bytes per change**: xDS response bytes all edges received from a flip until every edge
  saw it, per edge (other pushes in that interval included);
- **first push**: per edge, the bytes it received until it held a full config (a response
  of each type: clusters, listener, routes) and the seconds from the edges' start to then;
- ingest, placement CPU and the bytes per second in the window as ``controlplane``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks import controlplane as cp
from benchmarks.common import ROOT, Section, command_for, md_table, percentile, progress
from services.api.switchyard.v1 import telemetry_pb2
from services.xds.envoy_types import CLUSTER, LISTENER, ROUTE, model_cluster_name

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
AGGREGATE = model_cluster_name(cp.MODEL)
PROBE_CLUSTER = f"dep:{cp.PROBE}/{cp.VARIANT}".encode()


class AdsEdges(cp.Edges):
    """``count`` simulated Envoys on delta ADS; the probe is "seen ready" while it is in
    their region's default aggregate cluster."""

    def __init__(self, address: str, count: int) -> None:
        super().__init__(address, count)
        self.change_bytes: list[float] = []  # per change: bytes per edge until all saw it
        self.responses = 0
        self.t0 = time.monotonic()
        # (10 s bucket since the edges started, resource kind) -> bytes received
        self.by_kind: dict[tuple[int, str], int] = {}
        # per edge: bytes received and seconds since the edges started until it held its
        # first full config (a response of each type: clusters, listener, routes)
        self.first_bytes: list[int] = [0] * count
        self.first_s: list[float | None] = [None] * count

    async def _watch(self, i: int, ch: grpc.aio.Channel) -> None:
        region = cp.REGIONS[i % len(cp.REGIONS)][0]
        call = ch.stream_stream(
            ADS_METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=None)
        node = discovery_pb2.DeltaDiscoveryRequest().node
        node.id, node.cluster = f"edge-{i}", region
        node.metadata.update({"listen_host": "127.0.0.1", "listen_port": 50051 + i})
        requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        for type_url, names in ((CLUSTER, []), (LISTENER, []), (ROUTE, [f"routes:{region}"])):
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url,
                                                      resource_names_subscribe=names)
            req.node.CopyFrom(node)
            await requests.put(req)

        async def outgoing():  # type: ignore[no-untyped-def]
            while (req := await requests.get()) is not None:
                yield req

        types: set[str] = set()
        try:
            async for raw in call(outgoing()):
                now = time.monotonic()
                self.updates += 1
                self.bytes += len(raw)
                resp = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
                if self.first_s[i] is None:
                    self.first_bytes[i] += len(raw)
                    types.add(resp.type_url)
                    if types >= {CLUSTER, LISTENER, ROUTE}:
                        self.first_s[i] = now - self.t0
                await requests.put(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=resp.type_url, response_nonce=resp.nonce))  # the ACK
                bucket = int(now - self.t0) // 10 * 10
                for r in resp.resources:
                    kind = (bucket, r.name.split(":")[0])
                    self.by_kind[kind] = self.by_kind.get(kind, 0) + len(r.resource.value)
                    if r.name == AGGREGATE:
                        not_ready = PROBE_CLUSTER not in r.resource.value
                        if not_ready != self.state[i]:
                            self.state[i], self.changed_at[i] = not_ready, now
            self.ended.append(f"edge-{i}: stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a stream that died must show, not look like a slow edge
            self.died(i, e, "ADS stream ended")
        finally:
            with contextlib.suppress(Exception):
                requests.put_nowait(None)

    async def wait_all(self, not_ready: bool, since: float, limit_s: float) -> float | None:
        b0 = self.bytes
        got = await super().wait_all(not_ready, since, limit_s)
        self.change_bytes.append((self.bytes - b0) / self.count)
        return got


PROBE_COMPUTE_NS = 20_000_000  # per inference: half the fleet's ~40 ms
_FLEET_REPORT = cp.report


def probe_report(bid: str, tick: int, ready: bool = True) -> telemetry_pb2.TelemetryReport:
    """``cp.report`` with the probe's compute at half the fleet's, so that it is the cheapest
    (and fastest) deployment for every edge region and heads each region's default order:
    the aggregates are cut at ``EnvoySettings.cap`` deployments, and a probe ranked behind
    thousands of equal rows (its id sorts last) is in none, so its flip changes nothing an
    edge is sent (nothing to time). The flip measured is thus one that changes every
    region's default aggregate."""
    r = _FLEET_REPORT(bid, tick, ready)
    if bid == cp.PROBE:
        for m in r.models:
            m.compute_infer_ns = m.execution_count * PROBE_COMPUTE_NS
    return r


def _first_push(edges: AdsEdges) -> tuple[str, str]:
    """(bytes of the first full config per edge, seconds until the edges held it), median
    and the largest / last; an edge that never held one is counted, not averaged in."""
    kb = sorted(b / 1e3 for b, s in zip(edges.first_bytes, edges.first_s, strict=True)
                if s is not None)
    secs = sorted(s for s in edges.first_s if s is not None)
    missing = edges.count - len(secs)
    if not secs:
        return "-", f"none of {edges.count}"
    return (f"{percentile(kb, 50):,.1f} / {kb[-1]:,.1f}",
            f"{percentile(secs, 50):.1f} / {secs[-1]:.1f}"
            + (f" ({missing} never)" if missing else ""))


def _p99(lv: cp.Level) -> str:
    d = sorted(lv.delays_ms)
    return (f"{percentile(d, 99):,.0f} ms" if d else "none seen") + (
        f" ({lv.timeouts} of {len(d) + lv.timeouts} timed out)" if lv.timeouts else "")


def _notes(done: list[tuple[str, cp.Level, float]]) -> list[str]:
    """The prose under the table, from its rows."""
    out = []
    before = {lv.gpus: (lv, b) for label, lv, b in done if label == "before"}
    for label, lv, b in done:
        if label == "before" or lv.gpus not in before:
            continue
        old, old_b = before[lv.gpus]
        out.append(
            f"{lv.gpus:,} GPUs, before → after in one run: propagation p99 {_p99(old)} → "
            f"{_p99(lv)}; bytes per edge per change {old_b:,.0f} → {b:,.0f}; placement CPU "
            f"{old.cpu_pct:.0f} % → {lv.cpu_pct:.0f} %; ingest {old.ingest_per_s:,.0f} → "
            f"{lv.ingest_per_s:,.0f} of {lv.target_per_s:,.0f} reports/s.")
    now = [lv for label, lv, _ in done if label != "before"]
    if now:
        worst = max(now, key=lambda lv: lv.gpus)
        d = sorted(worst.delays_ms)
        met = not worst.timeouts and bool(d) and percentile(d, 99) <= 500
        kept = worst.ingest_per_s / worst.target_per_s
        out.append(
            f"Issue 15's targets with Envoy (ADS) edges at {worst.gpus:,} GPUs and "
            f"{worst.edges} edges: ingest {100 * kept:.1f} % of offered "
            f"(≥ 99 %: **{'met' if kept >= 0.99 else 'missed'}**), propagation p99 "
            f"{_p99(worst)} (≤ 500 ms: **{'met' if met else 'missed'}**).")
    return out


def run(quick: bool, levels: list[int] | None = None, before: str | None = None,
        after: str = ROOT, by_kind: bool = False) -> Section:
    """``by_kind``: a note per run with the bytes the edges received per 10 s by resource
    kind (``dep`` deployment clusters, ``model`` aggregates, ``routes``, ``ingress``)."""
    t0 = time.monotonic()
    gpus_levels = levels or ([1000] if quick else [1000, 5000, 10000])
    window, changes, timeout = (5.0, 3, 8.0) if quick else (10.0, 8, 15.0)
    variants = [cp.Variant(root=after)]
    if before:
        variants = [cp.Variant("before", before), cp.Variant("after", after)]
    rows: list[list[object]] = []
    done: list[tuple[str, cp.Level, float]] = []  # (label, level, median bytes per change)
    kinds: dict[str, dict[tuple[int, str], int]] = {}
    # the probe's reports are sent from this process (cp._probe_stream), the fleet's by
    # the agents' process, which this does not change
    cp.report = probe_report  # type: ignore[assignment]
    for gpus in gpus_levels:
        for v in variants:
            progress(f"controlplane_ads: {gpus:,} GPUs, 100 ADS edges, {v.label}")
            made: list[AdsEdges] = []

            def make(address: str, count: int) -> AdsEdges:
                made.append(AdsEdges(address, count))
                return made[-1]

            lv = asyncio.run(cp.measure(gpus, 100, window, changes, streams=8,
                                        timeout_s=timeout, variant=v, make_edges=make))
            d = sorted(lv.delays_ms)
            per_change = sorted(made[0].change_bytes) if made else []
            first = _first_push(made[0]) if made else ("-", "-")
            progress(f"controlplane_ads: ingest {lv.ingest_per_s:,.0f}/s of "
                     f"{lv.target_per_s:,.0f}/s, placement CPU {lv.cpu_pct:.0f} %, "
                     f"p99 {percentile(d, 99) if d else '-'} ms, {len(lv.ended)} streams ended")
            done.append((v.label, lv, percentile(per_change, 50) if per_change
                          else float("nan")))
            if by_kind and made:
                kinds[f"{v.label} {gpus:,}"] = made[0].by_kind
            rows.append([*([v.label] if before else []), f"{gpus:,}", lv.edges,
                         f"{lv.ingest_per_s:,.0f} / {lv.target_per_s:,.0f}",
                         f"{lv.cpu_pct:.0f} %", f"{lv.update_mb_per_s:.1f}",
                         percentile(d, 50), percentile(d, 99),
                         f"{len(d)}/{len(d) + lv.timeouts}",
                         f"{percentile(per_change, 50):,.0f}" if per_change else "-",
                         *first, len(lv.ended), f"{lv.load1:.1f}"])
    table = md_table([*(["placement"] if before else []), "GPUs (backends)", "ADS edges",
                      "ingest reports/s (sustained / offered)", "placement CPU",
                      "xDS bytes to edges MB/s (window)", "propagation p50 ms",
                      "propagation p99 ms", "changes seen by all edges",
                      "bytes per edge per change (median)",
                      "first push per edge KB (median / largest)",
                      "first full config s (median / last edge)", "streams ended",
                      "host load (1 min)"], rows)
    notes = [
        "Simulated Envoys: delta-ADS streams that ACK every response; no Envoy applies the "
        "config. Placement is a real process; everything shares the 2-core host.",
        "Propagation: from the probe's flip to the last of the 100 edges receiving its "
        "region's default aggregate cluster without (or again with) the probe; a change not "
        f"seen by every edge within {timeout:.0f} s is a timeout, not averaged in.",
        *_notes(done),
        *(f"Bytes all edges received per 10 s since they started, by resource kind ({k}): "
          + "; ".join(f"{t}-{t + 10} s {kind} {b / 1e6:,.1f} MB"
                      for (t, kind), b in sorted(tally.items()) if b >= 1e5)
          for k, tally in kinds.items()),
    ]
    return Section(title="Control plane with Envoy edges (delta ADS)",
                   command=command_for(__name__, quick) + "".join(
                       [f" --levels {','.join(str(g) for g in gpus_levels)}"] * bool(levels)
                       + [" --before <worktree of the old commit>"] * bool(before)
                       + [" --by-kind"] * by_kind),
                   table=table, notes=notes, elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--levels", default="", help="GPU counts, comma-separated")
    p.add_argument("--before", default="", help="a checkout of the old commit, run first")
    p.add_argument("--after", default=ROOT, help="the checkout measured (default this one)")
    p.add_argument("--by-kind", action="store_true",
                   help="bytes the edges received per 10 s by resource kind, in the notes")
    args = p.parse_args()
    levels = [int(g) for g in args.levels.split(",")] if args.levels else None
    print(run(args.quick, levels, args.before or None, args.after, args.by_kind).markdown())


if __name__ == "__main__":
    main()
