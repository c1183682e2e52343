"""Route tables: for one logical model and one edge region, every deployment with its estimates.

Candidates are ranked routable-first, then by cost, then by latency. A deployment that no
call may use right now keeps its row with ``dropped_reason`` set, so ``explain`` can show
it. Estimates follow ``placement.latency`` and ``placement.cost``; hardware verdicts follow
``placement.hardware``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from placement import latency, prior
from placement.catalog import Catalog
from placement.cost import cost_per_request
from placement.fleet import OBSERVATION_TTL_S, BackendState, FleetState
from placement.hardware import assess
from placement.model import Availability, Candidate, Variant
from placement.prices import PriceCatalog
from placement.shares import borrowable

PRIOR_COMPUTE_FRACTION_OF_SLO = 0.25  # compute assumed before Triton has served a call
TAIL_REFRESH_S = 1.0  # the learned tail factor is recomputed at most this often
# A deployment's compute from the same variant on the same accelerator elsewhere in the
# fleet while its own samples are few (``placement.prior``); ``PRIOR_Z`` > 0 also widens a
# row nobody has observed by the uncertainty left in its mean. Off: see ``placement.prior``.
FLEET_PRIOR = False
PRIOR_Z = 0.0
# A backend's modelled queue at the mean service time of the calls it serves (every variant
# shares its FIFO), not this variant's own: off, see ``placement.prior``.
MIX_QUEUE = False
# Rows carry their backend's mix (``Candidate.mix_compute_ms``, ``ahead_ms``) so an edge's
# per-call wait (its calls past its share, the fallback's M/M/c wait) is priced at the
# service time of the calls ahead of it in the backend's FIFO, every variant's, when that
# is longer than the row's own (``MIX_AT_LEAST_OWN``; off: the mix even when shorter).
# Off: it lifts held-out-many-models to 99.51/99.51/99.38 % (from 99.16/99.21/99.17) but
# held-out-return-into-burst falls past its seed spread (more calls reach the fallback in
# the burst, and the fallback herds) and tight-three-variant is 2-11 % dearer;
# benchmarks/RESULTS.md, 'Cost: the wait behind the backend's other variants'.
MIX_WAIT = False
MIX_AT_LEAST_OWN = True
MIX_LONGER = 1.1  # a mix within 10 % of the row's own compute is the row's own (0: no churn)

# (accelerator, variant) -> [(backend id, mean compute ms, samples)] of measured deployments
Pools = dict[tuple[str, str], list[tuple[str, float, float]]]


def rank(c: Candidate) -> tuple[bool, float, float, str]:
    """Table order: routable first, then cheapest, then fastest."""
    return (bool(c.dropped_reason), c.cost_usd, c.latency_p95_ms, c.deployment_id)


@dataclass(frozen=True, slots=True)
class TableSettings:
    observed_min_samples: int = 20
    stale_after_s: float = 5.0
    # Learn the p95/compute factor of unmeasured deployments from the measured ones
    # (``tail_factor``). Off: on the 8 cost scenarios (3 seeds) it raised tight-three-variant's
    # cost 7-13 % at the median, and at a lower quantile it left single-cloud-hetero and
    # noisy-cheap-spot no better; most misses it aimed at are service-time draws, not the mean.
    learned_tail: bool = False
    # An edge's slots also hold its share of the slots idle at the last report
    # (``shares.borrowable``). Off: see ``placement.filters.slo`` (rejected attempts).
    borrow_idle: bool = False


class RouteBuilder:
    def __init__(self, catalog: Catalog, prices: PriceCatalog, fleet: FleetState,
                 settings: TableSettings = TableSettings()) -> None:
        self.catalog = catalog
        self.prices = prices
        self.fleet = fleet
        self.settings = settings
        self._tails: dict[str, tuple[float, float]] = {}  # model -> (computed at, factor)

    def build(self, model: str, edge_region: str, now: float) -> list[Candidate]:
        cands = self.rows(model, edge_region, self.fleet.backends, now)
        cands.sort(key=rank)
        return cands

    def rows(self, model: str, edge_region: str, backend_ids: Iterable[str],
             now: float) -> list[Candidate]:
        """Unsorted candidates of the given backends only (for incremental rebuilds)."""
        logical = self.catalog.model(model)
        names = {v.name for v in logical.variants}
        backends = self.fleet.backends
        tail = (self.tail_factor(model, now) if self.settings.learned_tail
                else latency.UNMEASURED_TAIL_FACTOR)
        pools = self._pools(names) if FLEET_PRIOR or PRIOR_Z > 0 else None
        return [self._candidate(state, v, edge_region, logical.default_slo_ms, now, tail,
                                pools)
                for bid in backend_ids if (state := backends.get(bid)) is not None
                for v in state.backend.variants if v.name in names]

    def _candidate(self, state: BackendState, v: Variant, edge_region: str,
                   default_slo_ms: float, now: float,
                   tail: float = latency.UNMEASURED_TAIL_FACTOR,
                   pools: Pools | None = None) -> Candidate:
        b = state.backend
        deployment_id = f"{b.id}/{v.name}"
        snap = state.last
        verdict = assess(list(snap.gpus)) if snap else None
        load = state.loads.get(v.name)
        own = load.compute_ms if load is not None else None
        samples = load.samples if load is not None else 0.0
        if pools is not None and FLEET_PRIOR:
            own, samples = prior.shrunk(own, samples, prior.pooled(
                (ms, n) for bid, ms, n in pools.get((b.accelerator, v.name), ())
                if bid != b.id))
        measured = own is not None
        compute = own if own is not None else default_slo_ms * PRIOR_COMPUTE_FRACTION_OF_SLO
        penalty_reason = "" if measured else "no measurements yet (prior estimate)"
        if verdict is not None and verdict.penalty > 1.0:
            compute *= verdict.penalty
            penalty_reason = verdict.penalty_reason
        rtt = self.fleet.rtt_observed.get((edge_region, b.region),
                                          self.catalog.rtt(edge_region, b.region))
        queue = latency.queue_ms(max(compute, mix_ms(state)) if MIX_QUEUE else compute,
                                 state.utilisation, b.max_concurrency,
                                 load.queue_ms if load else 0.0)
        p95 = latency.p95_ms(rtt, queue, compute, tail)
        observed = self.fleet.observed_p95(edge_region, deployment_id,
                                           self.settings.observed_min_samples, now)
        if observed is None:
            observed = self._observed_elsewhere(deployment_id, edge_region, rtt, now)
        if observed is not None:
            p95 = observed
        elif PRIOR_Z > 0:  # nobody has observed it: the mean's own uncertainty on top
            p95 = rtt + (p95 - rtt) * prior.widened(samples, tail, PRIOR_Z)
        usd_s = self.prices.usd_per_second(b.accelerator, b.cloud, b.region, b.price_class)
        # The backend's servers are shared by every variant it hosts: what is spare for this
        # variant is its full-concurrency rate times the fraction of servers not busy.
        spare = latency.capacity_rps(compute, b.max_concurrency) * (1.0 - state.utilisation)
        return Candidate(
            deployment_id=deployment_id, backend_id=b.id, endpoint=b.endpoint,
            variant=v.name, region=b.region, cloud=b.cloud, accelerator=b.accelerator,
            quality=v.quality, latency_p95_ms=p95, rtt_ms=rtt, queue_ms=queue,
            compute_ms=compute,
            cost_usd=cost_per_request(usd_s, compute) if usd_s is not None else 0.0,
            spare_capacity=spare, observed=observed is not None,
            dropped_reason=self._dropped(state, v, usd_s, verdict.removed if verdict else ""),
            availability=state.availability, penalty_reason=penalty_reason,
            concurrency=b.max_concurrency,
            mix_compute_ms=ahead_mix(state, compute) if MIX_WAIT else 0.0,
            edge_slots=_slots(b.max_concurrency
                              * self.fleet.slot_share(edge_region, deployment_id, now,
                                                      len(self.catalog.regions))
                              * (borrowable(state.utilisation) if self.settings.borrow_idle
                                 else 1.0)),
            tokens=self.fleet.tokens.speed(deployment_id, now))

    def _pools(self, variants: set[str]) -> Pools:
        """The measured deployments of ``variants`` by (accelerator, variant)."""
        out: Pools = {}
        for state in self.fleet.backends.values():
            for name, load in state.loads.items():
                if name in variants and load.compute_ms is not None and load.samples > 0:
                    out.setdefault((state.backend.accelerator, name), []).append(
                        (state.backend.id, load.compute_ms, load.samples))
        return out

    def tail_factor(self, model: str, now: float) -> float:
        """The tail factor (``latency.tail_factor``) for ``model``'s deployments nobody has
        measured, learned from its measured ones (every model's if none of its own is),
        recomputed at most once per ``TAIL_REFRESH_S`` of ``now``."""
        cached = self._tails.get(model)
        if cached is not None and 0 <= now - cached[0] < TAIL_REFRESH_S:
            return cached[1]
        own: list[tuple[float, int]] = []
        every: list[tuple[float, int]] = []
        names = {v.name for v in self.catalog.model(model).variants}
        min_samples = self.settings.observed_min_samples
        for (region, dep), o in self.fleet.observed.items():
            if o.samples < min_samples or now - o.at > OBSERVATION_TTL_S:
                continue
            backend_id, _, variant = dep.partition("/")
            state = self.fleet.backends.get(backend_id)
            load = state.loads.get(variant) if state is not None else None
            if state is None or load is None or load.compute_ms is None:
                continue
            b = state.backend
            rtt = self.fleet.rtt_observed.get((region, b.region),
                                              self.catalog.rtt(region, b.region))
            queue = latency.queue_ms(load.compute_ms, state.utilisation, b.max_concurrency,
                                     load.queue_ms)
            ratio = (latency.tail_ratio(o.p95_ms, rtt, queue, load.compute_ms), o.samples)
            every.append(ratio)
            if variant in names:
                own.append(ratio)
        factor = latency.tail_factor(own or every)
        self._tails[model] = (now, factor)
        return factor

    def _observed_elsewhere(self, deployment_id: str, edge_region: str, rtt: float,
                            now: float) -> float | None:
        """This edge region's p95 of a deployment only other edge regions have measured:
        their p95 minus their RTT is the deployment's own queue and service time, the same
        for every caller; add this region's RTT (weighted by samples)."""
        seen = self.fleet.observed_elsewhere(deployment_id, self.settings.observed_min_samples,
                                             now)
        if not seen:
            return None
        region = self.fleet.backends[deployment_id.split("/", 1)[0]].backend.region
        total = sum(samples for _, samples, _ in seen)
        own = sum(samples * (p95 - self.fleet.rtt_observed.get(
            (r, region), self.catalog.rtt(r, region))) for r, samples, p95 in seen) / total
        return rtt + max(own, 0.0)

    @staticmethod
    def _dropped(state: BackendState, v: Variant, usd_s: float | None, hw_removed: str) -> str:
        b = state.backend
        if state.availability is Availability.DRAINED:
            return "backend drained by operator"
        if usd_s is None:
            return (f"no price for {b.accelerator} {b.price_class} in {b.cloud}/{b.region}; "
                    "add one to the price catalog")
        if hw_removed:
            return hw_removed
        snap = state.last
        if snap is not None and not snap.ready:
            return "Triton server not ready"
        stats = snap.variants.get(v.name) if snap else None
        if stats is not None and not stats.ready:
            return f"model {v.name} not ready on {b.id}"
        return ""


def mix_ms(state: BackendState) -> float:
    """The mean service time of the calls ``state``'s backend serves, every variant
    (server-seconds busy per call, from telemetry); 0 before it has served any."""
    rps = sum(v.rps for v in state.loads.values())
    busy = sum(v.busy_fraction for v in state.loads.values())
    return 1000.0 * busy / rps if rps > 0 else 0.0


def ahead_mix(state: BackendState, compute_ms: float) -> float:
    """A row's ``Candidate.mix_compute_ms``: the mean service time of the calls ahead of one
    of its calls in the backend's FIFO (``mix_ms``, two significant digits), 0 (the row's
    own compute) when the mix is not over ``MIX_LONGER`` × its own compute (with
    ``MIX_AT_LEAST_OWN``; else whenever the backend has served calls). A one-variant
    backend's rows keep 0 and do not change with its mix's noise."""
    mix = mix_ms(state)
    if mix <= 0 or (MIX_AT_LEAST_OWN and mix <= MIX_LONGER * compute_ms):
        return 0.0
    return _slots(mix)


def _slots(x: float) -> float:
    """Two significant digits: finer changes are noise and would only churn the tables."""
    return float(f"{x:.2g}")
