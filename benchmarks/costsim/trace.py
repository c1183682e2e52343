"""The call trace every policy sees: arrival times, edge regions, call classes, service noise.

Arrivals are a non-homogeneous Poisson process per (region, model), drawn by thinning:

    rate(r, m, t) = load_rps(r) × load_scale × share(m) × diurnal(local hour) × Π bursts
    diurnal(h)    = 1 + amplitude × cos(2π (h − peak_local_h) / 24)

where the local hour is the simulated hour of day (``t / duration × 24``) plus the region's
``utc_offset_h``. Each call also carries a standard-normal ``z``: its service time on
whichever deployment serves it is ``mean × exp(σ z − σ²/2)`` (lognormal, mean-preserving),
so every policy faces the same noise for the same call (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.costsim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Trace:
    duration_s: float
    t: np.ndarray  # arrival times, sorted
    region: np.ndarray  # index into regions (sorted names)
    klass: np.ndarray  # index into Scenario.classes()
    z: np.ndarray  # standard-normal service noise per call
    regions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, slots=True)
class OutageWindow:
    start_s: float
    end_s: float
    pools: frozenset[str]


def rate(s: Scenario, region: str, model: str, t: float, duration_s: float,
         load_scale: float) -> float:
    r = s.regions[region]
    hour = t / duration_s * 24.0
    local = (hour + r.utc_offset_h) % 24.0
    shape = 1.0 + s.diurnal_amplitude * math.cos(
        2 * math.pi * (local - s.diurnal_peak_local_h) / 24.0)
    mult = 1.0
    for b in s.bursts:
        if b.region in ("*", region) and b.model in ("", model) and \
                b.start_h <= hour < b.start_h + b.duration_h:
            mult *= b.multiplier
    return r.load_rps * load_scale * s.models[model].share * shape * mult


def generate(s: Scenario, quick: bool, seed: int | None = None) -> Trace:
    """The deterministic trace of a scenario (same seed → same calls)."""
    duration = s.quick_duration_s if quick else s.duration_s
    scale = s.quick_load_scale if quick else s.load_scale
    rng = np.random.default_rng(s.seed if seed is None else seed)
    names = tuple(sorted(s.regions))
    classes = s.classes()
    ts, rs, ks = [], [], []
    max_burst = math.prod(max(b.multiplier, 1.0) for b in s.bursts) if s.bursts else 1.0
    for ri, region in enumerate(names):
        for model in sorted(s.models):
            peak = (s.regions[region].load_rps * scale * s.models[model].share
                    * (1 + abs(s.diurnal_amplitude)) * max_burst)
            if peak <= 0:
                continue
            n = rng.poisson(peak * duration)
            cand = np.sort(rng.uniform(0.0, duration, n))
            keep_p = np.array([rate(s, region, model, x, duration, scale) for x in cand]) / peak
            kept = cand[rng.uniform(size=n) < keep_p]
            mine = [c for c in classes if c.model == model]
            shares = np.array([c.share for c in mine])
            pick = rng.choice(len(mine), size=len(kept), p=shares / shares.sum())
            ts.append(kept)
            rs.append(np.full(len(kept), ri))
            ks.append(np.array([classes.index(mine[j]) for j in range(len(mine))])[pick])
    t = np.concatenate(ts) if ts else np.zeros(0)
    order = np.argsort(t, kind="stable")
    return Trace(duration, t[order], np.concatenate(rs)[order], np.concatenate(ks)[order],
                 rng.standard_normal(len(t)), names)


def outage_windows(s: Scenario, duration_s: float) -> list[OutageWindow]:
    return [OutageWindow(s.hours_to_s(o.start_h, duration_s),
                         s.hours_to_s(o.start_h + o.duration_h, duration_s),
                         frozenset(p.id for p in s.pools if o.matches(p)))
            for o in s.outages]
