"""What the ADS federation adds to a region's compile (issue 15, Envoy edges over shards).

``python -m benchmarks.federation_merge [--rows 1000,5000]``: a region with two models whose
rows are half this shard's and half another's; times the federation's re-merge of its own
rows (``RouteStore.apply`` of its hub's tables as its shard, what ``Federation.snapshot``
does once per hub publish) against ``compile_region`` of the merged tables (what the ADS
server does once per publish in any case). Synthetic rows (one variant per backend), wall
time on this host, median of ``--repeats`` re-merges and one compile per size.
"""

from __future__ import annotations

import argparse
import statistics
import time

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.edge.routes import RouteStore
from services.xds.resources import EnvoySettings, compile_region

MODELS = ("summarize", "generate")


def _table(model: str, n: int, region: str, prefix: str) -> placement_pb2.RouteTable:
    return placement_pb2.RouteTable(model=model, edge_region="r-edge", candidates=[
        placement_pb2.Candidate(deployment_id=f"{prefix}{i}/{model}", backend_id=f"{prefix}{i}",
                                region=region, variant=model, cost_usd=i * 1e-6,
                                endpoint=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}:8001")
        for i in range(n)])


def measure(n: int, repeats: int) -> tuple[float, float]:
    """(median re-merge ms, compile ms) with ``n`` rows per model from each shard."""
    store = RouteStore("r-edge", None, shard_of=lambda r: "own" if r == "r-own" else "peer")
    store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=[
        _table(m, n, "r-peer", "p") for m in MODELS]), shard="peer")
    own = [_table(m, n, "r-own", "o") for m in MODELS]
    merges = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=own), shard="own")
        merges.append((time.perf_counter() - t0) * 1e3)
    merged = [store.tables[m] for m in sorted(store.tables)]
    assert all(len(t.candidates) == 2 * n for t in merged)
    t0 = time.perf_counter()
    compile_region("r-edge", merged, build_profile("cheapest", 0.05), EnvoySettings())
    return statistics.median(merges), (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1000,5000", help="rows per model from each shard")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print("| rows per model (own + peer) | re-merge ms (median) | compile ms | re-merge / compile |")
    print("|---|---|---|---|")
    for n in (int(x) for x in args.rows.split(",")):
        merge_ms, compile_ms = measure(n, args.repeats)
        print(f"| {n} + {n} | {merge_ms:.0f} | {compile_ms:.0f} | "
              f"{merge_ms / compile_ms:.1%} |")


if __name__ == "__main__":
    main()
