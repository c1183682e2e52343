"""Run every policy on one scenario's trace (two worker processes) and the LP bound."""

from __future__ import annotations

import multiprocessing
import pathlib
import zlib
from dataclasses import dataclass

from benchmarks.costsim import lp, policies
from benchmarks.costsim.control import ControlPlane
from benchmarks.costsim.engine import SimResult, Simulation
from benchmarks.costsim.envoy_policy import envoy
from benchmarks.costsim.litellm import LiteLLMCostRouter
from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.costsim.trace import Trace, generate

POLICIES = ("switchyard", "switchyard-whole-slots", "lowest-latency", "round-robin",
            "cheapest-ignoring-slo", "litellm-cost", "envoy")
PUBLISHED = "-published"  # a policy's name + this: its edges see the hub's publishes


def make_policy(name: str, s: Scenario,
                on_decision: policies.DecisionHook | None = None) -> policies.Policy:
    st = s.settings
    # ``<policy>-published``: the policy on the rows as the live hub publishes them, with
    # the policy's own seed (the same draws: what differs is what its edges see)
    full, published = name, name.endswith(PUBLISHED)
    name = name.removesuffix(PUBLISHED)
    seed = s.seed ^ zlib.crc32(name.encode())
    if name == "litellm-cost":
        return LiteLLMCostRouter(s)
    control = ControlPlane(s.catalog(), s.prices(), sorted(s.regions),
                           share_slots=name != "switchyard-whole-slots", published=published)
    for b in s.backends():
        control.fleet.register(b)
    if name in ("switchyard", "switchyard-whole-slots"):
        return policies.switchyard(control, seed, st.spread_band, st.slo_margin_ms,
                                   on_decision, full)
    if name == "lowest-latency":
        return policies.lowest_latency(control, seed, st.slo_margin_ms)
    if name == "cheapest-ignoring-slo":
        return policies.cheapest_ignoring_slo(control, seed, st.slo_margin_ms)
    if name == "envoy":
        return envoy(control, seed, st.spread_band, st.slo_margin_ms, st.max_attempts,
                     name=full)
    if name == "round-robin":
        return policies.RoundRobin(control, st.slo_margin_ms)
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")


def simulate(s: Scenario, trace: Trace, name: str) -> SimResult:
    return Simulation(s, trace, make_policy(name, s)).run()


def _worker(args: tuple[str, bool, str]) -> SimResult:
    path, quick, name = args
    s = load_scenario(path)
    return simulate(s, generate(s, quick), name)


def run_policies(path: pathlib.Path, quick: bool, names: tuple[str, ...] = POLICIES,
                 workers: int = 2) -> list[SimResult]:
    """Each policy in its own worker; the trace is regenerated there from the seed."""
    jobs = [(str(path), quick, n) for n in names]
    if workers <= 1:
        return [_worker(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return pool.map(_worker, jobs, chunksize=1)


@dataclass
class Bound:
    max_attainment: float
    at_max: lp.LpPoint
    frontier: list[lp.LpPoint]
    at_policy: dict[str, lp.LpPoint]
    checks: dict[str, lp.AssignmentCheck]


def bound(s: Scenario, trace: Trace, results: list[SimResult], points: int = 6) -> Bound:
    m = lp.build(s, trace)
    amax = lp.max_attainment(m)
    lo = min([r.attainment for r in results] + [amax]) if results else amax
    lo = max(lo, 0.5)
    grid = sorted({round(lo + (amax - lo) * i / (points - 1), 4) for i in range(points)})
    frontier = [lp.solve(m, a) for a in grid]
    checks = {r.policy: lp.assignment_check(s, trace, r) for r in results}
    at_policy = {r.policy: lp.solve(m, min(checks[r.policy].model_attainment, amax))
                 for r in results}
    return Bound(amax, lp.solve(m, amax), frontier, at_policy, checks)
