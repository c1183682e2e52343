"""What-ifs on the cost simulator's Envoy row, one scenario and seed at a time (issue 12).

    python -m benchmarks.envoy_whatif --scenario NAME [--seed-offset K] [--knobs A,B=x,...]
    python -m benchmarks.envoy_whatif --table RUNS.txt

Nothing here is pushed by placement or compiled by ``services.xds``: each knob patches the
Envoy row (``benchmarks/costsim/envoy_policy.py``) or the split it compiles
(``placement.splits`` through ``services.xds.order``) for this process only, to measure a
rule before anyone builds it. One line per run: attainment, cost per 1M calls, failed and
missed calls, and the missed calls that arrived in the day's first 2 and 10 s (the cold
start). ``switchyard`` as the only knob runs the per-call row instead. ``--table`` turns such
lines into a markdown table with the points and cost ratio against each seed's
``switchyard`` line and against its unpatched ``base`` line, computed here.

Knobs (all measured on ``held-out-many-models``, RESULTS.md, none kept):

- ``spread``: ``plan_region(cold_spread=True)`` (the ``envoy-cold-spread`` row): while
  nothing is learned of a region, each route split by room;
- ``loosest``: ``placement.splits`` serves classes loosest SLO first instead of tightest;
- ``relearn=S``: while an edge has no rate learned, recompile ``S`` s after the last compile
  (``learn_every_s`` otherwise);
- ``warm=H:T``: ``splits.RATE_HEADROOM`` is ``H`` for ``T`` s after the edge's first compile;
- ``wroom=T``: for ``T`` s after the edge's first compile, a class the split puts on more
  than one deployment is split by room (``splits._by_room``) instead;
- ``unobs=F``: a deployment without an observed p95 counts ``F`` × its slot share (feasible
  and fallback rows);
- ``borrow``: each feasible row's slot share (not the fallback rows') times
  ``shares.borrowable`` at its backend's reported utilisation (what a per-call edge may fill
  past its share).
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import pathlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from benchmarks.common import md_table
from benchmarks.costsim import envoy_policy
from benchmarks.costsim.misses import TracedSimulation, causes
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate
from benchmarks.envoy_fidelity import MAX_COST_RATIO, MAX_POINTS_BELOW, early, policy_for
from placement import latency, queueing, shares, splits
from placement.model import Candidate
from services.xds import order as xorder

SCENARIOS = pathlib.Path(__file__).parent / "scenarios"
LINE = re.compile(r"^(?P<scenario>\S+) (?P<seed>\d+) (?P<knobs>\S+): att (?P<att>[\d.]+)% "
                  r"cost (?P<cost>[\d.]+) failed (?P<failed>\d+) missed (?P<missed>\d+) "
                  r"first2s (?P<f2>\d+) first10s (?P<f10>\d+)")


def _patch_split(change: Callable[[list[splits.Demand]], list[splits.Demand]] | None = None,
                 after: Callable[[list[splits.Demand], dict[Any, dict[str, float]]],
                                 None] | None = None) -> None:
    inner = xorder.split

    def patched(demands: Sequence[splits.Demand], *args: Any, **kwargs: Any
                ) -> dict[Any, dict[str, float]]:  # the rest of split's arguments as given
        ds = change(list(demands)) if change else list(demands)
        out = inner(ds, *args, **kwargs)
        if after:
            after(ds, out)
        return out

    xorder.split = patched  # type: ignore[assignment]


def _slots(demands: list[splits.Demand], f: Callable[[Candidate], float],
           fallback: bool = True) -> list[splits.Demand]:
    """``demands`` with each feasible row's slot share (and each fallback row's, with
    ``fallback``) replaced by ``f`` of the row."""
    def one(c: Candidate) -> Candidate:
        return dataclasses.replace(c, edge_slots=f(c))
    return [dataclasses.replace(d, feasible=[one(c) for c in d.feasible],
                                fallback=[one(c) for c in d.fallback] if fallback
                                else d.fallback) for d in demands]


def _busy(c: Candidate) -> float:
    cap = latency.capacity_rps(c.compute_ms, max(c.concurrency, 1))
    return 1.0 - min(1.0, max(0.0, c.spare_capacity / cap)) if cap > 0 else 1.0


def apply(knobs: Mapping[str, str]) -> None:
    """Patch this process for ``knobs`` (the module docstring)."""
    policy = envoy_policy.EnvoyPolicy
    first: dict[str, float] = {}
    state = {"warm": False}
    compile_ = policy._compile

    def timed_compile(self: envoy_policy.EnvoyPolicy, edge_id: str,
                      edge: envoy_policy._Edge, now: float) -> None:
        t0 = first.setdefault(edge_id, now)
        if "warm" in knobs:
            h, t = (float(x) for x in knobs["warm"].split(":"))
            splits.RATE_HEADROOM = h if now - t0 < t else 1.25
        state["warm"] = "wroom" in knobs and now - t0 < float(knobs["wroom"])
        try:
            compile_(self, edge_id, edge, now)
        finally:
            splits.RATE_HEADROOM = 1.25
            state["warm"] = False

    policy._compile = timed_compile  # type: ignore[method-assign]
    if "relearn" in knobs:
        cold_s = float(knobs["relearn"])

        def edge_of(self: envoy_policy.EnvoyPolicy, edge_id: str,
                    now: float) -> envoy_policy._Edge:
            edge = self.edges.get(edge_id)
            if edge is None:
                edge = self.edges[edge_id] = envoy_policy._Edge()
            self._sync()
            cold = not any(r > 0 for r in edge.learning._rates.values())
            every = cold_s if cold else self.learn_every_s
            if edge.version != self.version or (
                    now - edge.compiled_at >= every and (edge.news or edge.holding)):
                self._compile(edge_id, edge, now)
            return edge

        policy._edge = edge_of  # type: ignore[method-assign]
    if "loosest" in knobs:
        def rsorted(it: Iterable[Any], key: Any = None, reverse: bool = False) -> list[Any]:
            xs = list(it)
            flip = bool(xs) and isinstance(xs[0], splits.Demand)
            return builtins.sorted(xs, key=key, reverse=reverse != flip)

        splits.sorted = rsorted  # type: ignore[attr-defined]
    if "unobs" in knobs:
        f = float(knobs["unobs"])
        _patch_split(lambda ds: _slots(ds, lambda c: c.slots if c.observed else c.slots * f))
    if "borrow" in knobs:
        _patch_split(lambda ds: _slots(ds, lambda c: min(
            c.slots * shares.borrowable(_busy(c)), float(c.concurrency)), fallback=False))
    if "wroom" in knobs:
        def by_room(ds: list[splits.Demand], out: dict[Any, dict[str, float]]) -> None:
            if not state["warm"]:
                return
            for d in ds:
                if d.rate != splits.UNKNOWN and d.rate > 0 and len(out.get(d.key, {})) > 1:
                    out[d.key] = splits._by_room(d, {}, {}, queueing.TAIL, {}) \
                        or out[d.key]

        _patch_split(after=by_room)


def simulate(scenario: str, seed_offset: int, knobs: Mapping[str, str]) -> str:
    s = load_scenario(SCENARIOS / f"{scenario}.toml")
    s.seed += seed_offset
    variant = ("switchyard" if "switchyard" in knobs
               else "envoy-cold-spread" if "spread" in knobs else "envoy")
    apply(knobs)
    p = policy_for(variant, s)
    trace = generate(s, True)
    sim = TracedSimulation(s, trace, p)
    t0 = time.monotonic()
    r = sim.run()
    why = causes(sim, r)
    name = ",".join(f"{k}={v}" if v else k for k, v in knobs.items()) or "base"
    return (f"{s.name} {s.seed} {name}: att {r.attainment * 100:.2f}% "
            f"cost {r.cost_per_million():.2f} failed {r.failed} missed {len(why)} "
            f"first2s {early(why, trace.t, 2.0)} first10s {early(why, trace.t)} "
            f"wall {time.monotonic() - t0:.0f}s {dict(Counter(why.values()))}")


def table(lines: Iterable[str]) -> str:
    """The runs' lines as a markdown table against each seed's ``switchyard`` and ``base``
    lines (points and cost ratio computed from the rounded values shown)."""
    runs = [m.groupdict() for m in map(LINE.match, lines) if m]
    by = {(r["seed"], r["knobs"]): r for r in runs}
    rows = []
    for r in runs:
        if r["knobs"] == "switchyard":
            continue
        sw, base = by.get((r["seed"], "switchyard")), by.get((r["seed"], "base"))
        pts = float(r["att"]) - float(sw["att"]) if sw else float("nan")
        ratio = float(r["cost"]) / float(sw["cost"]) if sw else float("nan")
        ok = pts >= -MAX_POINTS_BELOW and ratio <= MAX_COST_RATIO
        vs = (f"{float(r['att']) - float(base['att']):+.2f}"
              if base and r is not base else "")
        rows.append([r["scenario"], r["seed"], r["knobs"], f"{float(r['att']):.2f}%",
                     f"{pts:+.2f}", r["cost"], f"{ratio:.3f}", "yes" if ok else "no", vs,
                     r["missed"], r["f2"], r["f10"]])
    met = sum(1 for r in rows if r[7] == "yes")
    return md_table(["scenario", "seed", "knobs", "SLO attained", "Δ points vs switchyard",
                     "USD / 1M calls", "cost × switchyard", "target", "Δ points vs base",
                     "missed", "missed, arrived in the first 2 s", "in the first 10 s"],
                    rows, "lllrrrrlrrrr") + f"\n\nRuns meeting the target: {met} of {len(rows)}."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="held-out-many-models")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--knobs", default="", help="comma-separated: spread, loosest, relearn=S, "
                   "warm=H:T, wroom=T, unobs=F, borrow, switchyard")
    p.add_argument("--table", type=pathlib.Path, help="runs' lines to tabulate")
    args = p.parse_args()
    if args.table:
        print(table(args.table.read_text().splitlines()))
        return
    knobs = dict([*k.split("=", 1), ""][:2] for k in args.knobs.split(",") if k)
    print(simulate(args.scenario, args.seed_offset, knobs), flush=True)


if __name__ == "__main__":
    main()
