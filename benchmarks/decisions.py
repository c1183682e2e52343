"""Decisions: µs per routing decision and memory, 10 to 10,000 candidate deployments.

``placement.registry.build_profile(name).choose(cands, ctx, rng)`` — the exact call the edge
makes per request — over a synthetic route table shaped like ``RouteBuilder``'s output (20
regions on 5 clouds, list-price-like costs, p95 20–800 ms, 2 % dropped, 1 % cordoned, 5 %
without spare capacity, ranked routable-first then by cost), for the ``cheapest`` (default)
and ``fastest`` profiles, under two call shapes:

- ``default``: the model's SLO (300 ms), no other hint, 3 ejected deployments, the edge's own
  p95 for 50 deployments (what a busy edge has);
- ``restricted``: residency to 2 of 20 regions, ``x-min-quality 0.85``, SLO 150 ms.

Memory: bytes per candidate retained by the table (tracemalloc, candidates built inside the
trace) and the peak allocated during one decision. ``indexed`` is the prototype in
``benchmarks/_indexed.py`` (a proposal for placement/pipeline.py), checked to give the same
decision as ``Profile.choose`` on every measured context before it is timed.

    python -m benchmarks.decisions [--quick]
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections.abc import Callable

from benchmarks._indexed import IndexedChooser, IndexedTable
from benchmarks.common import Section, command_for, main, md_table, progress, text_table
from placement.model import Availability, CallContext, Candidate, Hints
from placement.registry import build_profile

ESTIMATE_S = (20, 60)
SIZES = (10, 100, 1_000, 10_000)
TARGET_US = 20.0
CLOUDS = ("aws", "gcp", "azure", "oci", "lambda")
REGIONS = tuple(f"{cl}-region-{i}" for cl in CLOUDS for i in range(4))


def make_table(n: int, seed: int = 1) -> list[Candidate]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        region = REGIONS[i % len(REGIONS)]
        compute = rng.uniform(5, 400)
        rtt = rng.choice((1.0, 30.0, 60.0, 120.0))
        dropped = "backend drained by operator" if rng.random() < 0.02 else ""
        out.append(Candidate(
            deployment_id=f"b{i}/model-v{i % 3}", backend_id=f"b{i}", endpoint=f"10.0.0.{i}:8001",
            variant=f"model-v{i % 3}", region=region, cloud=region.split("-")[0],
            accelerator=rng.choice(("nvidia-t4", "nvidia-l4", "nvidia-a10g", "nvidia-h100")),
            quality=rng.uniform(0.6, 0.95), latency_p95_ms=compute + rtt + rng.uniform(0, 50),
            rtt_ms=rtt, queue_ms=0.0, compute_ms=compute,
            cost_usd=round(rng.lognormvariate(-9, 0.8), 12),
            spare_capacity=0.0 if rng.random() < 0.05 else rng.uniform(1, 50),
            dropped_reason=dropped,
            availability=Availability.CORDONED if rng.random() < 0.01 else Availability.ACTIVE))
    out.sort(key=lambda c: (bool(c.dropped_reason), c.cost_usd, c.latency_p95_ms,
                            c.deployment_id))
    return out


def contexts(table: list[Candidate], seed: int = 2) -> dict[str, CallContext]:
    rng = random.Random(seed)
    ids = [c.deployment_id for c in table]
    ejected = dict.fromkeys(rng.sample(ids, min(3, len(ids))), "ejected (outlier detection)")
    observed = {d: rng.uniform(20, 600) for d in rng.sample(ids, min(50, len(ids)))}
    default = CallContext(Hints(slo_ms=300.0), 2.0, frozenset(), frozenset(), ejected, observed)
    restricted = CallContext(
        Hints(slo_ms=150.0, min_quality=0.85, allowed_regions=frozenset(REGIONS[:2])),
        2.0, frozenset(), frozenset(), ejected, observed)
    return {"default": default, "restricted": restricted}


def time_per_call(fn: Callable[[], object], budget_s: float) -> float:
    """Median µs per call over batches filling ``budget_s``."""
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-7)
    batch = max(1, min(10_000, int(0.02 / one)))
    samples = []
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(samples) < 3:
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t) / batch)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def table_bytes(n: int) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = make_table(n)
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del table
    return size


def peak_bytes(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def check_same(profile_name: str, table: list[Candidate], ctx: CallContext, trials: int) -> None:
    """The prototype must pick what Profile.choose picks, draw for draw."""
    profile = build_profile(profile_name)
    fast = IndexedChooser(profile)
    indexed = IndexedTable(table)
    for seed in range(trials):
        a = profile.choose(table, ctx, random.Random(seed)).candidate.deployment_id
        b = fast.choose(indexed, ctx, random.Random(seed)).candidate.deployment_id
        if a != b:
            raise AssertionError(f"indexed prototype differs ({profile_name}, n={len(table)},"
                                 f" seed {seed}): {a} vs {b}")


def run(quick: bool) -> Section:
    budget = 0.15 if quick else 0.6
    t0 = time.monotonic()
    rows: list[list[object]] = []
    prev: dict[tuple[str, str], float] = {}
    for n in SIZES:
        table = make_table(n)
        ctxs = contexts(table)
        per_cand = table_bytes(n) / n
        indexed = IndexedTable(table)
        by_cost = sorted(table, key=lambda c: c.cost_usd)  # how the edge stores its tables
        for name in ("cheapest", "fastest"):
            profile = build_profile(name)
            fast = IndexedChooser(profile)
            for shape, ctx in ctxs.items():
                check_same(name, table, ctx, 20 if quick else 100)
                rng = random.Random(0)
                us = time_per_call(lambda: profile.choose(table, ctx, rng), budget)
                us_fast = time_per_call(lambda: fast.choose(indexed, ctx, rng), budget / 2)
                for seed in range(20):  # the edge's path must decide as the full pipeline
                    a = profile.choose(by_cost, ctx, random.Random(seed))
                    b = profile.choose(by_cost, ctx, random.Random(seed), cost_sorted=True)
                    if a.candidate != b.candidate:
                        raise AssertionError(f"cost-sorted walk differs ({name}, n={n})")
                us_edge = time_per_call(
                    lambda: profile.choose(by_cost, ctx, rng, cost_sorted=True), budget / 2)
                peak = peak_bytes(lambda: profile.choose(table, ctx, rng))
                peak_fast = peak_bytes(lambda: fast.choose(indexed, ctx, rng))
                feasible = profile.choose(table, ctx, rng).feasible_count
                growth = us / prev[(name, shape)] if (name, shape) in prev else float("nan")
                prev[(name, shape)] = us
                rows.append([n, name, shape, feasible, us, growth, us_edge, per_cand,
                             peak / 1024, us_fast, us / us_fast, peak_fast / 1024])
                progress(f"n={n:<6} {name:<8} {shape:<10} {us:10.1f} µs/decision "
                         f"(indexed {us_fast:6.1f} µs)  table {per_cand:.0f} B/cand  "
                         f"peak {peak / 1024:.1f} KiB")
    headers = ["candidates", "profile", "call", "feasible", "full pipeline µs", "growth ×",
               "edge path µs", "table B/cand", "peak KiB/decision", "indexed µs",
               "speed-up", "indexed KiB"]
    import sys
    print("\n" + text_table(headers, rows) + "\n", file=sys.stderr)
    worst_10k = max(r[4] for r in rows if r[0] == 10_000)
    worst_fast = max(r[9] for r in rows if r[0] == 10_000)
    edge_10k = max(r[6] for r in rows if r[0] == 10_000 and r[1] == "cheapest")
    edge_10k_default = max(r[6] for r in rows
                           if r[0] == 10_000 and r[1] == "cheapest" and r[2] == "default")
    notes = [
        f"**Edge path** (`Profile.choose(..., cost_sorted=True)` over the cost-sorted table "
        f"the edge keeps, cheapest profile): {edge_10k_default:,.1f} µs for a call with "
        f"default hints and up to {edge_10k:,.1f} µs with residency + quality limits at "
        f"10,000 deployments → target ≤ {TARGET_US:.0f} µs "
        + ("met" if edge_10k <= TARGET_US else
           ("met for default calls, missed for restricted ones" if edge_10k_default
            <= TARGET_US else "missed")) + ". It walks ascending cost and stops at the "
        "spread band's edge; checked to decide exactly as the full pipeline.",
        f"**Full pipeline** (every filter over every candidate; the `fastest` baseline "
        f"profile and `Explain` use it): up to {worst_10k:,.0f} µs at 10,000.",
        f"**Target decision ≤ {TARGET_US:.0f} µs at 10,000 deployments**, full pipeline: "
        f"takes up to {worst_10k:,.0f} µs → "
        + ("met" if worst_10k <= TARGET_US else f"MISSED ({worst_10k / TARGET_US:,.0f}x over)")
        + f"; the indexed prototype takes up to {worst_fast:.1f} µs → "
        + ("met" if worst_fast <= TARGET_US else "missed") + ".",
        "Growth is linear in candidates (×≈10 per ×10): every call runs 9 filters over every "
        "candidate, then scores all survivors (`Profile.choose`).",
        "`indexed` (benchmarks/_indexed.py): walks a per-table cost order (cheapest) or "
        "latency order plus the edge's observed deployments (fastest) and stops at the end "
        "of the spread band; verified to return the same deployment as `Profile.choose` for "
        "the same rng on every row before timing.",
        "`feasible` is the survivors count reported by `Profile.choose`; "
        "`peak KiB/decision` is tracemalloc's peak during one call (survivor and score "
        "lists); `table B/cand` is the retained size of one `Candidate` with its strings.",
        f"Single Python thread, {'quick' if quick else 'full'} timing budget "
        f"{budget:.2f} s per cell, median of batches.",
    ]
    return Section("Routing decisions: µs per decision and memory vs candidates",
                   command_for(__name__, quick), md_table(headers, rows, "rllrrrrrrrr"),
                   notes, elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    main(run, __doc__)
