"""The provisioned-cost day's fluid router: the switchyard rule per bucket (step 3 of
:mod:`benchmarks.costsim.provisioned`'s module doc, which says what it models and why).

Each class goes to the deployment cheapest per call among those loaded, up and within its
SLO at the pool's resulting utilisation (the brain's p95 inverted,
:func:`placement.plan_types.max_utilisation`); a pool runs no higher than the lowest cap of
the flows on it. Classes are placed loosest-first and tightest-first, each also *taking
back* (a class may displace flows that pinned a pool at a lower cap when that serves more
of its calls than they carry; the displaced calls are placed again on their other options),
and the routing with the most calls within SLO counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from placement.forecast import ClassKey
from placement.latency import MAX_RHO
from placement.plan_types import PlanPool, PlanVariant, Problem, max_utilisation


@dataclass(frozen=True, slots=True)
class Routed:
    met: float  # calls/s within SLO
    late: float  # calls/s served outside SLO
    failed: float  # calls/s with no capacity anywhere
    work: dict[str, float]


class Router:
    """The switchyard rule in fluid form (module doc, step 3); options per class precomputed."""

    def __init__(self, problem: Problem, classes: list[ClassKey]) -> None:
        self.servers_per_gpu = {p.id: p.concurrency_per_gpu for p in problem.pools}
        # per class: (pool, variant, ρ*, service s), cheapest per call first
        self.options: dict[ClassKey, list[tuple[str, str, float, float]]] = {}
        self.any_fit: dict[ClassKey, list[tuple[str, str, float]]] = {}
        for k in classes:
            opts, fits = [], []
            for p in problem.pools:
                for v in problem.variants:
                    if v.model != k.model or v.quality < k.min_quality or (
                            p.variants and v.name not in p.variants):
                        continue
                    s = p.compute_ms(v) / 1000.0
                    fits.append((p.id, v.name, s))
                    rho = max_utilisation(problem.rtt_ms(k.edge_region, p.region),
                                          p.compute_ms(v), p.concurrency_per_gpu,
                                          k.slo_ms - problem.settings.slo_margin_ms)
                    if rho > 0:
                        opts.append((_per_call(p, v), p.id, v.name, rho, s))
            opts.sort()
            self.options[k] = [(pid, vn, rho, s) for _, pid, vn, rho, s in opts]
            self.any_fit[k] = sorted(fits)

    def route(self, rates: Mapping[ClassKey, float], ready: Mapping[str, float],
              loaded: Mapping[str, frozenset[str]], down: frozenset[str]) -> Routed:
        """The best (most calls within SLO) of loosest-first and tightest-first, each with
        and without taking pools back (module doc, step 3), stopping once all are met."""
        total = sum(rates.values()) - 1e-9
        best: Routed | None = None
        for take_back in (False, True):
            for order in (_loosest_first, _tightest_first):
                r = self._route(rates, ready, loaded, down, order, take_back)
                if best is None or r.met > best.met:
                    best = r
                if best.met >= total:
                    return best
        assert best is not None
        return best

    def _route(self, rates: Mapping[ClassKey, float], ready: Mapping[str, float],
               loaded: Mapping[str, frozenset[str]], down: frozenset[str],
               order: Callable[[ClassKey], tuple[float, float, ClassKey]],
               take_back: bool = False) -> Routed:
        servers = {pid: n * self.servers_per_gpu[pid] for pid, n in ready.items()
                   if n > 0 and pid not in down}
        work = dict.fromkeys(servers, 0.0)
        flows: dict[str, list[_Flow]] = {pid: [] for pid in servers}
        met = late = failed = 0.0
        left: list[tuple[ClassKey, float]] = []

        def place(k: ClassKey, rate: float, may_take: bool) -> tuple[float, list[_Flow]]:
            """Place ``rate`` of ``k`` on its options; what is left, and what it displaced."""
            nonlocal met
            displaced: list[_Flow] = []
            for pid, vname, rho, s in self.options[k]:
                if rate <= 1e-12:
                    break
                if pid not in servers or vname not in loaded.get(pid, ()):
                    continue
                on = flows[pid]
                cap = min((f.rho for f in on), default=MAX_RHO)
                room = (min(cap, rho) * servers[pid] - work[pid]) / s
                lower = [f for f in on if f.rho < rho - 1e-12] if may_take else []
                if lower:  # take the pool back from flows that pinned it lower
                    kept = [f for f in on if f.rho >= rho - 1e-12]
                    freed = work[pid] - sum(f.rps * f.service_s for f in lower)
                    back = (min([f.rho for f in kept] + [rho]) * servers[pid] - freed) / s
                    lost = sum(f.rps for f in lower)
                    if min(rate, back) - lost > min(rate, max(room, 0.0)) + 1e-9:
                        flows[pid], work[pid], room = kept, freed, back
                        met -= lost
                        displaced += lower
                if room <= 1e-12:
                    continue
                take = min(rate, room)
                work[pid] += take * s
                flows[pid].append(_Flow(k, rho, s, take))
                rate -= take
                met += take
            return rate, displaced

        again: list[_Flow] = []
        for k in sorted(rates, key=order):
            rest, displaced = place(k, rates[k], take_back)
            again += displaced
            if rest > 1e-12:
                left.append((k, rest))
        for f in again:  # displaced calls: their other options, taking nothing back
            rest, _ = place(f.key, f.rps, False)
            if rest > 1e-12:
                left.append((f.key, rest))
        for k, owed in left:  # late: any loaded variant that may serve it, up to MAX_RHO
            rate = owed
            for pid, vname, s in self.any_fit[k]:
                if rate <= 1e-12:
                    break
                if pid not in servers or vname not in loaded.get(pid, ()):
                    continue
                take = min(rate, max(0.0, (MAX_RHO * servers[pid] - work[pid]) / s))
                work[pid] += take * s
                rate -= take
                late += take
            failed += max(rate, 0.0)
        return Routed(met, late, failed, work)


@dataclass(frozen=True, slots=True)
class _Flow:
    """Calls/s of one class on one pool, at the cap its SLO allows there."""

    key: ClassKey
    rho: float
    service_s: float
    rps: float


def _loosest_first(k: ClassKey) -> tuple[float, float, ClassKey]:
    return (-k.slo_ms, k.min_quality, k)


def _tightest_first(k: ClassKey) -> tuple[float, float, ClassKey]:
    return (k.slo_ms, -k.min_quality, k)


def _per_call(p: PlanPool, v: PlanVariant) -> float:
    """Placement's cost per call: price per GPU-second × compute seconds over concurrency."""
    return p.usd_per_gpu_hour / 3600.0 * p.compute_ms(v) / 1000.0 / p.concurrency_per_gpu
