"""How the edges' rule routes a plan's demand: a fluid model of cheapest-per-call routing.

The planner's flows (``x[k,p,v]``) say which pool *should* serve each class, but edges do not
follow flows: each call goes to the deployment cheapest per call among those loaded, up and
within its SLO at the pool's load (placement's cost model and the brain's p95). A class with
other options can then take the room a plan kept on a pool for a class with none: in the
far-edge scenario a Frankfurt class with a near L4 and a far A100 found the A100 cheaper per
call and filled it at the cap São Paulo's tight classes pin it to, and São Paulo's calls,
which only that A100 reaches in time, were late all day (the static peak plan routed at its
own peak demand: 12.9 of 168.5 calls/s late). :func:`shortfall` measures that for a plan;
:func:`placement.planner.plan` re-plans for it.

:class:`Router` is that rule per time bucket, also the provisioned-cost day's judge
(``benchmarks.costsim.provisioned_router``): each class goes to its options cheapest per call
first; a pool runs no higher than the lowest cap (``max_utilisation``) of the flows on it.
Classes are placed loosest-first and tightest-first (each order loses some lean plan's calls
the other serves), each also *taking back* (a class may displace flows that pinned a pool at
a lower cap when that serves more of its calls than they carry; the displaced calls are
placed again on their other options), and the routing with the most calls within SLO counts:
an optimistic stand-in for edges that move calls away from deployments that miss. What finds
no room is served late where any loaded pool has room, or fails.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, NamedTuple, Protocol, TypeVar

from placement.latency import MAX_RHO
from placement.plan_types import Plan, PlanPool, PlanVariant, Problem, counted, max_utilisation


class ClassLike(Hashable, Protocol):
    """A demand class as routing sees it (``placement.forecast.ClassKey``, ``DemandClass``)."""

    @property
    def model(self) -> str: ...

    @property
    def min_quality(self) -> float: ...

    @property
    def slo_ms(self) -> float: ...

    @property
    def edge_region(self) -> str: ...


K = TypeVar("K", bound=ClassLike)
DRAWN_MIN_RPS = 1e-3  # a class's calls/s on a pool beyond its planned flow that count as drawn


@dataclass(frozen=True, slots=True)
class Routed(Generic[K]):
    met: float  # calls/s within SLO
    late: float  # calls/s served outside SLO
    failed: float  # calls/s with no capacity anywhere
    work: dict[str, float]
    short: dict[K, float]  # per class, calls/s not within SLO (late or failed)
    # calls/s within SLO per (class, pool, variant): where the rule sent them
    flows: dict[tuple[K, str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Flow(Generic[K]):
    """Calls/s of one class on one pool, at the cap its SLO allows there."""

    key: K
    rho: float
    service_s: float
    rps: float
    variant: str = ""


def _loosest_first(k: ClassLike) -> tuple[float, float, str, str]:
    return (-k.slo_ms, k.min_quality, k.model, k.edge_region)


def _tightest_first(k: ClassLike) -> tuple[float, float, str, str]:
    return (k.slo_ms, -k.min_quality, k.model, k.edge_region)


def per_call(p: PlanPool, v: PlanVariant) -> float:
    """Placement's cost per call: price per GPU-second × compute seconds over concurrency."""
    return p.usd_per_gpu_hour / 3600.0 * p.compute_ms(v) / 1000.0 / p.concurrency_per_gpu


class Router(Generic[K]):
    """The edges' rule in fluid form (module doc); options per class precomputed.

    ``count_reclaim``: a spot GPU counts for the share of its servers the planner's capacity
    rows count it for (:func:`placement.plan_types.counted`; the day's judge counts the GPUs
    that exist).
    """

    def __init__(self, problem: Problem, classes: Iterable[K],
                 count_reclaim: bool = False) -> None:
        self.servers_per_gpu = {p.id: p.concurrency_per_gpu * (
            counted(p, problem.settings) if count_reclaim else 1.0) for p in problem.pools}
        # per class: (pool, variant, ρ*, service s), cheapest per call first
        self.options: dict[K, list[tuple[str, str, float, float]]] = {}
        self.any_fit: dict[K, list[tuple[str, str, float]]] = {}
        rtts: dict[tuple[str, str], float] = {}
        for k in classes:
            opts, fits = [], []
            for p in problem.pools:
                for v in problem.variants:
                    if v.model != k.model or v.quality < k.min_quality or (
                            p.variants and v.name not in p.variants):
                        continue
                    s = p.compute_ms(v) / 1000.0
                    fits.append((p.id, v.name, s))
                    rtt = rtts.get((k.edge_region, p.region))
                    if rtt is None:
                        rtt = rtts[k.edge_region, p.region] = problem.rtt_ms(k.edge_region,
                                                                             p.region)
                    rho = max_utilisation(rtt, p.compute_ms(v), p.concurrency_per_gpu,
                                          k.slo_ms - problem.settings.slo_margin_ms)
                    if rho > 0:
                        opts.append((per_call(p, v), p.id, v.name, rho, s))
            opts.sort()
            self.options[k] = [(pid, vn, rho, s) for _, pid, vn, rho, s in opts]
            self.any_fit[k] = sorted(fits)

    def route(self, rates: Mapping[K, float], ready: Mapping[str, float],
              loaded: Mapping[str, frozenset[str]], down: frozenset[str] = frozenset()
              ) -> Routed[K]:
        """The best (most calls within SLO) of loosest-first and tightest-first, each with
        and without taking pools back (module doc), stopping once all are met."""
        total = sum(rates.values()) - 1e-9
        best: Routed[K] | None = None
        for take_back in (False, True):
            for order in (_loosest_first, _tightest_first):
                r = self._route(rates, ready, loaded, down, order, take_back)
                if best is None or r.met > best.met:
                    best = r
                if best.met >= total:
                    return best
        assert best is not None
        return best

    def _route(self, rates: Mapping[K, float], ready: Mapping[str, float],
               loaded: Mapping[str, frozenset[str]], down: frozenset[str],
               order: Callable[[ClassLike], tuple[float, float, str, str]],
               take_back: bool = False) -> Routed[K]:
        servers = {pid: n * self.servers_per_gpu[pid] for pid, n in ready.items()
                   if n > 0 and pid not in down}
        work = dict.fromkeys(servers, 0.0)
        flows: dict[str, list[_Flow[K]]] = {pid: [] for pid in servers}
        met = late = failed = 0.0
        left: list[tuple[K, float]] = []

        def place(k: K, rate: float, may_take: bool) -> tuple[float, list[_Flow[K]]]:
            """Place ``rate`` of ``k`` on its options; what is left, and what it displaced."""
            nonlocal met
            displaced: list[_Flow[K]] = []
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
                flows[pid].append(_Flow(k, rho, s, take, vname))
                rate -= take
                met += take
            return rate, displaced

        again: list[_Flow[K]] = []
        for k in sorted(rates, key=order):
            rest, displaced = place(k, rates[k], take_back)
            again += displaced
            if rest > 1e-12:
                left.append((k, rest))
        for f in again:  # displaced calls: their other options, taking nothing back
            rest, _ = place(f.key, f.rps, False)
            if rest > 1e-12:
                left.append((f.key, rest))
        short: dict[K, float] = {}
        for k, owed in left:  # late: any loaded variant that may serve it, up to MAX_RHO
            short[k] = short.get(k, 0.0) + owed
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
        placed: dict[tuple[K, str, str], float] = {}
        for pid, on in flows.items():
            for f in on:
                placed[f.key, pid, f.variant] = placed.get((f.key, pid, f.variant), 0.0) + f.rps
        return Routed(met, late, failed, work, short, placed)


class _Key(NamedTuple):
    model: str
    min_quality: float
    slo_ms: float
    edge_region: str
    position: int  # in ``Problem.demand``


class Shortfall:
    """:func:`shortfall` for one problem's classes and pools: the router's options (per class,
    cheapest per call first) depend on neither the rates nor the plan, so a planner checking
    several plans for one problem (its route rounds, :mod:`placement.replan`) builds them
    once."""

    def __init__(self, problem: Problem) -> None:
        self.keys = {_Key(k.model, k.min_quality, k.slo_ms, k.edge_region, i): k.rate_rps
                     for i, k in enumerate(problem.demand) if k.rate_rps > 0}
        self.router: Router[_Key] = Router(problem, self.keys, count_reclaim=True)
        self.names = [k.key for k in problem.demand]  # DemandClass.key, as Plan.serves names

    def __call__(self, found: Plan) -> dict[int, float]:
        return self.short(self.routed(found))

    def routed(self, found: Plan) -> Routed[_Key]:
        """The edges' rule on ``found``'s GPUs and variants at the problem's demand."""
        return self.router.route(self.keys, {pp.pool: float(pp.gpus) for pp in found.pools},
                                 found.loaded())

    @staticmethod
    def short(routed: Routed[_Key]) -> dict[int, float]:
        """Per demand class (index into ``Problem.demand``), the calls/s left short."""
        return {k.position: rps for k, rps in routed.short.items() if rps > 1e-9}

    def drawn(self, routed: Routed[_Key], found: Plan) -> dict[tuple[int, str, str], float]:
        """Calls/s the edges' rule sends a class to a (pool, variant) beyond ``found``'s flow
        there (``Problem.drawn``): a class that finds a pool the plan kept for others cheaper
        per call takes it, at the utilisation its own SLO allows there."""
        planned: dict[tuple[str, str, str], float] = {}
        for pp in found.pools:
            for key, vname, rps in pp.serves:
                planned[key, pp.pool, vname] = planned.get((key, pp.pool, vname), 0.0) + rps
        names = {k.position: self.names[k.position] for k in self.keys}
        out: dict[tuple[int, str, str], float] = {}
        for (k, pid, vname), rps in routed.flows.items():
            extra = rps - planned.get((names[k.position], pid, vname), 0.0)
            if extra > DRAWN_MIN_RPS:
                out[k.position, pid, vname] = extra
        return out


    def pinning(self, drawn: Mapping[tuple[int, str, str], float], found: Plan
                ) -> set[tuple[str, str]]:
        """The (pool, variant) pairs a class drawn there (:meth:`drawn`) pins lower than
        ``found`` planned (``PlannerSettings.route_unpin``): where its ρ* is under the cap
        ``found`` runs the pool at; if there are none, where it is under the highest ρ* of
        the classes ``found`` serves on the pool (``MAX_RHO`` on a pool serving none): the
        plan itself ran the pool at the drawn class's ρ* for some of its calls."""
        rho = {(k.position, pid, vname): r for k in self.keys
               for pid, vname, r, _ in self.router.options[k]}
        position = {name: i for i, name in enumerate(self.names)}
        caps = {pp.pool: pp.utilisation_cap for pp in found.pools}
        top = {pp.pool: max((rho.get((position.get(key, -1), pp.pool, vname), 0.0)
                             for key, vname, _ in pp.serves), default=MAX_RHO)
               for pp in found.pools}
        for under in (caps, top):
            pins = {(pid, vname) for (ki, pid, vname), rps in drawn.items()
                    if rps > DRAWN_MIN_RPS and rho.get((ki, pid, vname), MAX_RHO)
                    < under.get(pid, MAX_RHO) - 1e-9}
            if pins:
                return pins
        return set()


def without(problem: Problem, pairs: Iterable[tuple[str, str]]) -> Problem:
    """``problem`` with each (pool, variant) of ``pairs`` no longer loadable there (a pool
    left with no variant gets no GPUs) and the drawn flows onto them dropped."""
    gone: dict[str, set[str]] = {}
    for pid, vname in pairs:
        gone.setdefault(pid, set()).add(vname)
    if not gone:
        return problem
    names = [v.name for v in problem.variants]
    pools = []
    for p in problem.pools:
        left = frozenset(n for n in (p.variants or names) if n not in gone.get(p.id, ()))
        pools.append(p if p.id not in gone else replace(p, variants=left) if left
                     else replace(p, max_gpus=0))
    drawn = tuple(d for d in problem.drawn if d[2] not in gone.get(d[1], ()))
    return replace(problem, pools=tuple(pools), drawn=drawn)


def shortfall(problem: Problem, found: Plan) -> dict[int, float]:
    """Per demand class (index into ``problem.demand``), the calls/s the edges' rule leaves
    without a deployment within SLO on ``found``'s GPUs and variants at ``problem``'s demand
    (spot GPUs counted as the planner counts them); classes fully served are left out."""
    return Shortfall(problem)(found)
