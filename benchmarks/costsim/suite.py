"""Every scenario, every policy, both bounds, and where switchyard's misses go; the sweep.

``run_suite`` simulates each (scenario, policy) in two worker processes (the trace is
regenerated in the worker from the scenario's seed), then solves per scenario the fluid LP
bound (``lp.py``) and the queueing bound (``qbound.py``) at the attainment each policy
actually reached (clamped to the bound's own maximum). ``run_sweep`` varies one scenario's
service-time noise σ and its load, switchyard against lowest-latency.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pathlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.costsim import lp, qbound
from benchmarks.costsim.engine import SimResult
from benchmarks.costsim.misses import TracedSimulation, classify
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.costsim.trace import generate

SWEEP_POLICIES = ("switchyard", "lowest-latency")
SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5)
LOADS = (0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class Job:
    path: str
    quick: bool
    policy: str
    sigma: float | None = None  # overrides [sim].service_sigma
    load: float | None = None  # multiplies the scenario's load_scale


@dataclass
class PolicyRun:
    scenario: str
    result: SimResult
    misses: Counter[str]


@dataclass
class Bounds:
    lp_max: float
    q_max: float
    lp_at: dict[str, lp.LpPoint]  # per policy, at its attainment
    q_at: dict[str, lp.LpPoint]
    lp_995: lp.LpPoint  # at min(99.5 %, max)
    q_995: lp.LpPoint


def scenario_of(job: Job) -> Scenario:
    s = load_scenario(job.path)
    if job.sigma is not None:
        s.settings = dataclasses.replace(s.settings, service_sigma=job.sigma)
    if job.load is not None:
        s.load_scale *= job.load
        s.quick_load_scale *= job.load
    return s


def _simulate(job: Job) -> PolicyRun:
    s = scenario_of(job)
    sim = TracedSimulation(s, generate(s, job.quick), make_policy(job.policy, s))
    r = sim.run()
    return PolicyRun(s.name, r, classify(sim, r))


def _bounds(args: tuple[Job, dict[str, float]]) -> Bounds:
    job, attained = args
    s = scenario_of(job)
    trace = generate(s, job.quick)
    fluid, queued = lp.build(s, trace), qbound.build(s, trace)
    lp_max, q_max = lp.max_attainment(fluid), qbound.max_attainment(queued)
    # Just below the maximum: at the maximum itself the LP is degenerate and slow to solve.
    lp_cache: dict[float, lp.LpPoint] = {}
    q_cache: dict[float, lp.LpPoint] = {}

    def at(a: float, top: float, cache: dict[float, lp.LpPoint], solve) -> lp.LpPoint:  # type: ignore[no-untyped-def]
        key = round(min(a, top - 1e-4), 4)
        if key not in cache:
            cache[key] = solve(key)
        return cache[key]

    lp_at = {p: at(a, lp_max, lp_cache, lambda x: lp.solve(fluid, x))
             for p, a in attained.items()}
    q_at = {p: at(a, q_max, q_cache, lambda x: qbound.solve(queued, x))
            for p, a in attained.items()}
    return Bounds(lp_max, q_max, lp_at, q_at,
                  at(0.995, lp_max, lp_cache, lambda x: lp.solve(fluid, x)),
                  at(0.995, q_max, q_cache, lambda x: qbound.solve(queued, x)))


def _map(fn, jobs: Sequence[object], workers: int) -> list:  # type: ignore[no-untyped-def]
    if workers <= 1:
        return [fn(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=1)


def run_suite(paths: Sequence[pathlib.Path], policies: Sequence[str], quick: bool,
              workers: int = 2) -> list[tuple[Scenario, list[PolicyRun], Bounds]]:
    jobs = [Job(str(p), quick, name) for p in paths for name in policies]
    runs: list[PolicyRun] = _map(_simulate, jobs, workers)
    per: list[list[PolicyRun]] = [runs[i * len(policies):(i + 1) * len(policies)]
                                  for i in range(len(paths))]
    bound_jobs = [(Job(str(p), quick, ""), {r.result.policy: r.result.attainment for r in rs})
                  for p, rs in zip(paths, per, strict=True)]
    bounds: list[Bounds] = _map(_bounds, bound_jobs, workers)
    return [(load_scenario(p), rs, b) for p, rs, b in zip(paths, per, bounds, strict=True)]


@dataclass(frozen=True)
class SweepPoint:
    variable: str  # "sigma" or "load"
    value: float
    policy: str
    attainment: float
    cost_per_million: float


def run_sweep(path: pathlib.Path, quick: bool, workers: int = 2) -> list[SweepPoint]:
    jobs = [Job(str(path), quick, p, sigma=v) for v in SIGMAS for p in SWEEP_POLICIES]
    jobs += [Job(str(path), quick, p, load=v) for v in LOADS for p in SWEEP_POLICIES]
    runs: list[PolicyRun] = _map(_simulate, jobs, workers)
    return [SweepPoint("sigma" if j.sigma is not None else "load",
                       j.sigma if j.sigma is not None else float(j.load or 0), j.policy,
                       r.result.attainment, r.result.cost_per_million())
            for j, r in zip(jobs, runs, strict=True)]
