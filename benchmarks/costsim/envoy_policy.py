"""The ``envoy`` policy: an Envoy edge running the config placement compiles for it.

What is compiled comes from placement's own code, per push: every time the simulated
placement pushes tables (``ControlPlane.rebuild``), each edge's tables go through the wire
conversion an Envoy's control plane applies (``services.convert``) and every class of call
the edge has sent (model, SLO rounded down to whole ms as the listener's Lua matches it) is
compiled by ``services.xds.order.weighted``: the failover order with the miss margins
placement learned for the class from the edge's access log (``placement.feedback``, fed one
entry per served call: duration, ``x-served-by``, the SLO header), and the split of the
class's calls over its feasible deployments (``placement.splits``: the class's calls/s from
the access log since the last push, averaged as ``placement.edge_learning`` does, against the
edge's slot shares, less what its slow path reported sending), pushed as weighted
rotations of the order. ``split=False, learn_margins=False`` is the order alone, as before.
The rules Envoy applies to that order are read from the resources ``services.xds.resources``
builds (:meth:`EnvoyRules.compiled`): the route's ``retry_on`` and ``num_retries``, each
deployment cluster's outlier detection and circuit breakers (Envoy's defaults where the
cluster sets none: ``max_requests`` 1024, ``max_retries`` 3 parallel retries per cluster).
Between pushes an edge then does what Envoy does, nothing more:

- the route picks one of the class's weighted clusters at random by the pushed weights
  (Envoy's ``weighted_clusters``: one rotation of the order each, the policy's own seeded
  draw), and that aggregate cluster sends the call to its first child with a healthy host
  (one host per deployment cluster, so no weighted choice within it). Health is Envoy's own
  outlier detection: ``consecutive_5xx`` failures in a row eject the host for
  ``base_ejection_time × k`` (``k`` counts its ejections, less one per ``interval`` it stays
  in, at most ``max_ejection_time``). A gRPC RESOURCE_EXHAUSTED is HTTP 429 to the detector:
  not a 5xx, and it resets the run, as a success does;
- no per-call pricing: the order is fixed until the next push; the only in-flight counts
  are Envoy's circuit breakers, per deployment cluster at this edge. A cluster at
  ``max_requests`` answers 503 ``x-envoy-overloaded`` at once and Envoy never retries an
  overflow (``RetryStateImpl::wouldRetryFromReset``), and the aggregate does not move past a
  full child (it picks children by health only; envoyproxy/envoy#38185 asks for that and is
  closed unimplemented): the call fails;
- a retry happens only for a status in ``retry_on`` (a dead backend's refused connection or
  reset, UNAVAILABLE; not RESOURCE_EXHAUSTED, which goes back to the caller), at most
  ``num_retries`` times, and only while fewer retries than the budget of the aggregate the
  call was routed through (its rotation's) are in flight at this edge (else the call fails
  with its last status): its compiled ``min_retry_concurrency``, as an aggregate counts no
  requests for the budget's percent (``clusters.retry_concurrency``). It goes to the next
  child not yet attempted (``previous_priorities``). What a failure excludes is read from
  the call's ``placement.attempts`` (the engine's): the deployment, and after UNAVAILABLE
  every variant on that server, where ``previous_priorities`` excludes only the child
  attempted; the order puts a server's other variants last (``order.servers_apart``), so
  this only matters once the rest of the order is spent. The avoided regions of
  ``placement.attempts`` are ignored (Envoy has none). Envoy's retry back-off (25 ms
  base, jittered) is not modelled: the engine retries as soon as the failure is seen,
  which flatters this row during outages;
- feedback is Envoy's access log (``services.xds.feedback``): one entry per call, for the
  attempt that answered it (``x-served-by``); attempts that never reached a backend are not
  logged;
- slow start is placement's (``services.xds.returns``, the object the live server runs),
  off as it is there (``[edge] envoy_slow_start``): with ``slow_start_s`` (the
  what-if row ``envoy-slow-start``: ``[edge] slow_start_s``'s default), a deployment whose
  row comes back usable in the pushed tables (a backend back from an outage reports ready
  again) takes a rising share of its classes' split, recompiled at each of the ramp's
  steps. The simulated backend comes back warm: what the ramp costs is measured, not what
  it would save a cold one.

Calls with a quality floor carry ``x-min-quality``, a hint compiled config cannot express:
the listener's Lua sends them to the *slow path*, the node's co-located Python edge
(``services/xds/lua.py``), modelled as the per-call policy counting only its own calls in
flight (Envoy's are invisible to it) and running ``placement.attempts`` itself; its
observations go into the region's edge statistics with Envoy's (it reports under its own
edge id in a mesh, so placement splits slot shares between the two there). Without a
slow path (``slow_path=None``) the quality floor is applied to the table before the order is
computed, as a route per (SLO class, quality floor) would hold it. Also not modelled: the
back-off above; Envoy's interval timer granularity for un-ejection (hosts return exactly
when their time is up).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

from benchmarks.costsim import policies
from benchmarks.costsim.control import ControlPlane
from benchmarks.costsim.policies import Attempt, Policy
from benchmarks.costsim.scenario import CallClass
from placement import queueing
from placement.edge_learning import TIME_CONSTANT_S, EdgeLearning
from placement.model import Candidate
from placement.pipeline import Profile
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.config import EdgeRuntimeConfig
from services.convert import candidate_from_pb, candidate_to_pb
from services.placement.bands import material
from services.xds import resources
from services.xds.clusters import retry_concurrency
from services.xds.learning import MIN_RATE
from services.xds.plan import Route, Table, plan_region, route
from services.xds.returns import Returns
from services.xds.routes import ModelRoutes

RAMP_S = EdgeRuntimeConfig().slow_start_s  # the edge's ramp, as a mesh sets it
# what the live server compiles with by default ([edge] envoy_slow_start)
SLOW_START_S = RAMP_S if EdgeRuntimeConfig().envoy_slow_start else 0.0

# An aggregate cluster at an edge: (the model route's key, its class index or None for the
# default route, the first deployment of its rotation or None for the order itself).
Aggregate = tuple[str, int | None, str | None]
# Envoy's documented defaults for a cluster's circuit breakers and outlier detection.
DEFAULT_MAX_REQUESTS = 1024
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_EJECTION_S = 300.0
# Sim statuses by the retry_on conditions that cover them: a backend that is down refuses
# the connection or resets the streams it had (UNAVAILABLE to gRPC); a full Triton queue
# answers RESOURCE_EXHAUSTED.
_RETRY_ON = {"unavailable": frozenset({"unavailable", "reset", "connect-failure",
                                       "refused-stream", "5xx", "gateway-error"}),
             "exhausted": frozenset({"resource-exhausted"})}


def _seconds(d: object) -> float:
    return float(d.seconds) + float(d.nanos) / 1e9  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class EnvoyRules:
    """What an Envoy edge obeys besides the order, as ``services.xds.resources`` compiles it."""

    retried: frozenset[str]  # sim statuses (``unavailable``, ``exhausted``) Envoy retries
    max_attempts: int  # 1 + num_retries
    eject_after: int  # consecutive 5xx (gateway failures count the same here)
    eject_base_s: float
    eject_interval_s: float
    max_ejection_s: float
    max_requests: int  # per deployment cluster, calls in flight at this edge
    max_retries: int  # per aggregate cluster, retries in flight at this edge
    # What-if, not compiled by services.xds: each deployment cluster's max_requests is this
    # edge's slot share of it, rounded up, per push (the issue's "slot shares as circuit
    # breakers").
    breakers_from_shares: bool = False
    # The aggregates' retry budget, when they set one (they do): Envoy then ignores
    # max_retries and allows max(min_retry_concurrency, budget_percent % of the aggregate's
    # requests in flight) retries in flight; an aggregate counts no requests of its own, so
    # min_retry_concurrency holds, compiled per aggregate from the calls its plan puts
    # through it (``clusters.retry_concurrency``; these two are its inputs, read from a
    # compiled aggregate with none planned: the floor).
    retry_budget_percent: float = 0.0
    min_retry_concurrency: int = 0
    # Deployments per pushed order and rotation (``EnvoySettings.cap``, cut by
    # ``plan.plan_region`` as ``compile_region`` cuts them; None: the whole order).
    order_cap: int | None = None

    @classmethod
    def compiled(cls, s: resources.EnvoySettings) -> EnvoyRules:
        """Read from the resources placement would push (one deployment, one route)."""
        dep = placement_pb2.Candidate(deployment_id="b/v", backend_id="b", variant="v",
                                      region="r", endpoint="127.0.0.1:1")
        cluster = resources.deployment_cluster(dep, s)
        routes = resources.route_configuration(
            "r", {"m": resources.ModelRoutes(("b/v",), ())}, s)
        policy = next(r for r in routes.virtual_hosts[0].routes if r.name == "m").route.retry_policy
        on = {x.strip() for x in policy.retry_on.split(",")}
        od = cluster.outlier_detection
        thresholds = [t for t in cluster.circuit_breakers.thresholds if t.priority == 0]
        t = thresholds[0] if thresholds else None
        agg = [x for x in resources.model_cluster("m", ["b/v"], s).circuit_breakers.thresholds
               if x.priority == 0 and x.HasField("retry_budget")]
        budget = agg[0].retry_budget if agg else None
        return cls(
            retried=frozenset(k for k, conds in _RETRY_ON.items() if on & conds),
            max_attempts=1 + (policy.num_retries.value if policy.HasField("num_retries")
                              else 1),
            eject_after=od.consecutive_5xx.value if od.HasField("consecutive_5xx") else 5,
            eject_base_s=_seconds(od.base_ejection_time) if od.HasField(
                "base_ejection_time") else 30.0,
            eject_interval_s=_seconds(od.interval) if od.HasField("interval") else 10.0,
            max_ejection_s=_seconds(od.max_ejection_time) if od.HasField(
                "max_ejection_time") else DEFAULT_MAX_EJECTION_S,
            max_requests=t.max_requests.value if t is not None and t.HasField(
                "max_requests") else DEFAULT_MAX_REQUESTS,
            max_retries=t.max_retries.value if t is not None and t.HasField(
                "max_retries") else DEFAULT_MAX_RETRIES,
            retry_budget_percent=budget.budget_percent.value if budget is not None else 0.0,
            min_retry_concurrency=budget.min_retry_concurrency.value
            if budget is not None else 0,
            order_cap=s.cap)

    def retry_cap(self, inflight: float) -> float:
        """Retries an aggregate whose plan puts ``inflight`` calls in flight through it may
        have in flight at once: its compiled ``min_retry_concurrency`` (Envoy's budget
        percent applies to the aggregate's own requests, which it never counts)."""
        if self.retry_budget_percent <= 0 and self.min_retry_concurrency <= 0:
            return self.max_retries
        return retry_concurrency(inflight, self.retry_budget_percent,
                                 self.min_retry_concurrency)


@dataclass(slots=True)
class _Host:
    """Envoy's outlier detector for one deployment's host at one edge."""

    run: int = 0  # consecutive 5xx
    k: int = 0  # ejection multiplier
    until: float = -math.inf  # ejected until
    since: float = 0.0  # when ``k`` last changed or the host came back


@dataclass(slots=True)
class _Edge:
    """One Envoy edge: Envoy's own counters, and what placement keeps about it."""

    inflight: dict[str, int] = field(default_factory=dict)  # per deployment cluster
    retries: dict[Aggregate, int] = field(default_factory=dict)  # in flight, per aggregate
    # attempts in flight per (deployment, class): when each was sent, what its call had
    # excluded then (an attempt's result carries both), through which aggregate, whether
    # it is a retry (the engine's results name the deployment only, not the call)
    attempts: dict[tuple[str, CallClass],
                   list[tuple[float, frozenset[str], Aggregate, bool]]] = field(
        default_factory=dict)
    hosts: dict[str, _Host] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # max_requests, when per cluster
    # placement's side: what it learns of this edge from its access log and slow path
    learning: EdgeLearning = field(default_factory=EdgeLearning)
    # what was pushed: the hub version and time it was compiled at, the routes per model
    version: int = -1
    compiled_at: float = -math.inf
    news: int = 0  # calls learned from since the compile
    holding: bool = False  # the last compile's learned rates had not decayed
    models: dict[str, ModelRoutes] = field(default_factory=dict)


class EnvoyPolicy:
    """Choices an Envoy edge makes from the last pushed config (see the module docstring)."""

    def __init__(self, control: ControlPlane, profile: Profile, rules: EnvoyRules,
                 slo_margin_ms: float, slow_path: Policy | None = None,
                 name: str = "envoy", seed: int = 0, split: bool = True,
                 learn_margins: bool = True, tail: float = queueing.TAIL,
                 learn_every_s: float = TIME_CONSTANT_S, cold_spread: bool = False,
                 slow_start_s: float = SLOW_START_S) -> None:
        """``slow_path``: the co-located Python edge that calls with a quality floor go to
        (None: such calls take a compiled quality class, see the module docstring);
        ``split``: placement pushes weighted rotations of each class's order
        (``services.xds.order.weighted``), else the order alone; ``learn_margins``:
        placement learns miss margins from the access log and compiles them into the
        orders; ``seed``: Envoy's random choice among weighted clusters; ``cold_spread``:
        a what-if, ``plan.plan_region``'s split by room while nothing is learned (not what
        ``compile_region`` pushes); ``slow_start_s``: placement's ramp of a deployment that
        came back (``services.xds.returns``; 0: none)."""
        self.name = name
        self.slow_path = slow_path
        self.slow_calls = 0  # attempts decided by the slow path
        self.control: ControlPlane | None = control
        self._control = control
        self.profile = profile
        self.rules = rules
        self.slo_margin_ms = slo_margin_ms
        self.split = split
        self.learn_margins = learn_margins
        self.tail = tail
        self.learn_every_s = learn_every_s
        self.cold_spread = cold_spread
        self.returns = Returns(slow_start_s)  # per edge (its region), as the ADS server's
        # the hub's side: rows as last pushed, their order per table, the version
        self._pushed: dict[tuple[str, str, str], Candidate] = {}
        self._order: dict[tuple[str, str], list[str]] = {}
        self._synced = -1
        self.version = 0
        self._floors: dict[str, set[float]] = {}  # without a slow path: floors seen
        self.rng = random.Random(seed)
        self.edges: dict[str, _Edge] = {}
        self._refused: tuple[str, CallClass, str] | None = None  # failed, Envoy won't retry
        # the aggregate of the call whose attempt just failed: its retry's (the engine asks
        # for the retry right after the failed attempt's result)
        self._failed: tuple[str, CallClass, Aggregate] | None = None
        self.overflows = 0  # circuit breaker max_requests: 503, not retried
        self.retry_overflows = 0  # max_retries in flight: the retry is not made
        self.not_retried = 0  # a status outside retry_on
        self.no_healthy = 0  # every child ejected, or nothing in the order
        self.ejections = 0
        self.pushes = 0  # edge configs compiled
        self.split_calls = 0  # first attempts sent by a rotation other than the order

    # -- what was pushed -----------------------------------------------------------------

    def _sync(self) -> None:
        """The hub's publish: rows that changed materially since last pushed (as
        ``services.placement.hub`` decides, ``bands.material``) replace the pushed ones, through
        the wire conversion; any such row is a new hub version (every region recompiles)."""
        if self._control.builds == self._synced:
            return
        self._synced = self._control.builds
        changed = False
        for (model, region), table in self._control.tables.items():
            rows = self._order.setdefault((model, region), [])
            ids = [c.deployment_id for c in table]
            if ids != rows:
                rows[:] = ids
                changed = True
            for c in table:
                key = (model, region, c.deployment_id)
                old = self._pushed.get(key)
                if old is None or material(old, c):
                    self._pushed[key] = candidate_from_pb(candidate_to_pb(c))
                    changed = True
        self.version += changed

    def _edge(self, edge_id: str, now: float) -> _Edge:
        """The edge, with its config recompiled as the live xDS server recompiles it: on a
        new hub version, and ``learn_every_s`` after the last compile while its access log
        taught placement something or a learned rate has to decay
        (``services.xds.server.relearn_due``)."""
        edge = self.edges.get(edge_id)
        if edge is None:
            edge = self.edges[edge_id] = _Edge()
        self._sync()
        if edge.version != self.version or self.returns.due(edge_id, now) or (
                now - edge.compiled_at >= self.learn_every_s
                and (edge.news or edge.holding)):
            self._compile(edge_id, edge, now)
        return edge

    def _compile(self, edge_id: str, edge: _Edge, now: float) -> None:
        """What placement pushes this edge: ``plan.plan_region`` over the region's tables as
        last pushed, with what placement learned of the edge since the last compile
        (``placement.edge_learning``), as ``compile_region`` does."""
        self.pushes += 1
        edge.version, edge.compiled_at, edge.news = self.version, now, 0
        catalog = self._control.builder.catalog
        wire = {model: Table([self._pushed[(model, region, d)]
                              for d in self._order[(model, region)]],
                             catalog.model(model).default_slo_ms)
                for (model, region) in self._control.tables if region == edge_id}
        if self.slow_path is None:  # quality floors compiled as their own "models"
            wire = {**wire, **{f"{m}@{q}": Table([c for c in t.cands if c.quality >= q],
                                                 t.default_slo_ms)
                               for m, t in wire.items() for q in self._floors.get(m, ())}}
        if self.rules.breakers_from_shares:
            edge.limits.update({c.deployment_id: max(1, math.ceil(c.slots))
                                for t in wire.values() for c in t.cands})
        learned = edge.learning.learned(now, {c.deployment_id: c for t in wire.values()
                                              for c in t.cands})
        edge.holding = (any(r >= MIN_RATE for r in learned.rates.values())
                        or any(learned.margins.values()))
        if not self.learn_margins:
            learned = dataclasses.replace(learned, margins={})
        if not self.split:
            learned = dataclasses.replace(learned, rates={})
        if self.returns.ramp_s > 0:
            self.returns.observe(edge_id, [(m, t.cands) for m, t in wire.items()], now)
            learned = dataclasses.replace(learned, warming=self.returns.shares(edge_id, now))
        edge.models = plan_region(wire, self.profile, self.slo_margin_ms, learned,
                                  cap=self.rules.order_cap, cold_spread=self.cold_spread)

    def _model(self, klass: CallClass) -> str:
        if self.slow_path is None and klass.min_quality > 0:
            self._floors.setdefault(klass.model, set()).add(klass.min_quality)
            return f"{klass.model}@{klass.min_quality}"
        return klass.model

    def route(self, edge_id: str, klass: CallClass, now: float) -> Route | None:
        """The route such a call matches in the edge's last push (``plan.route``: the
        listener's Lua sends the call's SLO as whole ms)."""
        edge = self._edge(edge_id, now)
        model = self._model(klass)
        if model not in edge.models and model != klass.model:
            self._compile(edge_id, edge, now)  # a quality floor first seen: its route
        return route(edge.models, model, math.floor(klass.slo_ms))

    def order(self, model: str, edge: str, slo_ms: float, min_quality: float,
              now: float = 0.0) -> tuple[str, ...]:
        """The failover order of such a call's class, from the last push."""
        got = self.route(edge, CallClass(model, 0, 0.0, slo_ms, min_quality), now)
        return got.order if got is not None else ()

    # -- the Policy protocol -------------------------------------------------------------

    def choose(self, a: Attempt) -> str | None:
        if self.slow_path is not None and a.klass.min_quality > 0:
            self.slow_calls += 1
            return self.slow_path.choose(a)
        refused, self._refused = self._refused, None
        if refused is not None and refused[:2] == (a.edge, a.klass) and refused[2] in a.exclude:
            self.not_retried += 1
            return None
        edge = self._edge(a.edge, a.now)
        retry = bool(a.exclude)
        failed, self._failed = self._failed, None
        routes = self.route(a.edge, a.klass, a.now)
        order = routes.order if routes is not None else ()
        model = self._model(a.klass)
        agg: Aggregate = (model, routes.index if routes is not None else None, None)
        if retry:
            if failed is not None and failed[:2] == (a.edge, a.klass):
                agg = failed[2]
            if edge.retries.get(agg, 0) >= self._retry_cap(edge, agg):
                self.retry_overflows += 1
                return None
        elif routes is not None:
            edge.learning.call(routes.key, routes.slo_ms)
            edge.news += 1
            if routes.rotations:  # Envoy's weighted_clusters: one random pick per call
                order = self.rng.choices([o for _, o in routes.rotations],
                                         weights=[w for w, _ in routes.rotations])[0]
                self.split_calls += order[0] != routes.order[0]
                agg = (model, routes.index, order[0])
        # A retry in any rotation goes to the first child of the order not yet tried.
        for dep in order:
            if dep in a.exclude or self._ejected(edge, dep, a.now):
                continue
            if edge.inflight.get(dep, 0) >= edge.limits.get(dep, self.rules.max_requests):
                self.overflows += 1
                return None
            edge.inflight[dep] = edge.inflight.get(dep, 0) + 1
            edge.attempts.setdefault((dep, a.klass), []).append(
                (a.now, a.exclude, agg, retry))
            if retry:
                edge.retries[agg] = edge.retries.get(agg, 0) + 1
            return dep
        self.no_healthy += 1
        return None

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        edge = self.edges.setdefault(a.edge, _Edge())
        if self.slow_path is not None and a.klass.min_quality > 0:
            self.slow_path.result(a, deployment_id, latency_ms, status, now)
            if status == "ok":  # the slow path's own report: calls/s per deployment
                edge.learning.other_path(deployment_id)
            return
        if edge.inflight.get(deployment_id, 0) > 0:
            edge.inflight[deployment_id] -= 1
        sent = edge.attempts.get((deployment_id, a.klass))
        if sent:
            # the attempt's call had excluded the same then; an answer also names when the
            # attempt was sent, a failure does not: the latest (a full queue refuses an
            # attempt at once; an outage fails them all)
            mine = [j for j, x in enumerate(sent) if x[1] == a.exclude] or list(range(len(sent)))
            i = next((j for j in mine if sent[j][0] == a.now), mine[0]) \
                if status == "ok" else mine[-1]
            _, _, agg, was_retry = sent.pop(i)
            if was_retry and edge.retries.get(agg, 0) > 0:  # its hold on the budget ends
                edge.retries[agg] -= 1
            if status != "ok":
                self._failed = (a.edge, a.klass, agg)
        self._outlier(edge, deployment_id, status, now)
        if status == "ok":
            self._control.record(a.edge, deployment_id, latency_ms, True)
            # the access log's entry (duration, x-served-by, the SLO header): placement
            # learns this class's miss margins from it, kept at the class's SLO
            got = route(edge.models, self._model(a.klass), math.floor(a.klass.slo_ms))
            if got is not None:
                edge.learning.served(deployment_id, got.slo_ms, latency_ms, now, a.klass.slo_ms)
            return
        if status not in self.rules.retried:
            self._refused = (a.edge, a.klass, deployment_id)
            if status == "exhausted":  # the backend answered: logged with x-served-by
                self._control.record(a.edge, deployment_id, latency_ms, False)

    def _retry_cap(self, edge: _Edge, agg: Aggregate) -> float:
        """The aggregate's retry budget in the edge's last push (an aggregate the push no
        longer names: the floor, as nothing is planned through it)."""
        m = edge.models.get(agg[0])
        planned = m.inflight.get(agg[1], {}).get(agg[2], 0.0) if m is not None else 0.0
        return self.rules.retry_cap(planned)

    # -- outlier detection ---------------------------------------------------------------

    def _ejected(self, edge: _Edge, dep: str, now: float) -> bool:
        h = edge.hosts.get(dep)
        return h is not None and now < h.until

    def _outlier(self, edge: _Edge, dep: str, status: str, now: float) -> None:
        h = edge.hosts.setdefault(dep, _Host())
        if status != "unavailable":
            h.run = 0
            return
        h.run += 1
        if h.run < self.rules.eject_after or now < h.until:
            return
        r = self.rules
        # k falls by one per interval spent back in, rises by one per ejection.
        back_since = max(h.since, h.until)
        h.k = max(0, h.k - int((now - back_since) // r.eject_interval_s)) + 1
        h.until = now + min(r.eject_base_s * h.k, max(r.max_ejection_s, r.eject_base_s))
        h.since = now
        h.run = 0
        self.ejections += 1


def envoy(control: ControlPlane, seed: int, band: float, margin_ms: float,
          max_attempts: int, slow_path: bool = True, name: str = "envoy",
          rules: EnvoyRules | None = None, split: bool = True,
          learn_margins: bool = True, cold_spread: bool = False,
          slow_start_s: float = SLOW_START_S) -> EnvoyPolicy:
    """The ``envoy`` row: placement's ``cheapest`` profile compiled as ``services.xds`` does
    (deterministic: one host per cluster, no weights), with a slow path for quality floors
    (the per-call policy, counting only its own calls in flight, drawing from ``seed``);
    ``slow_path=False``: quality floors compiled into the order too; ``rules``: other than
    what ``services.xds.resources`` compiles (a what-if, to be labelled as such)."""
    if rules is None:
        rules = EnvoyRules.compiled(resources.EnvoySettings(max_attempts=max_attempts,
                                                            slo_margin_ms=margin_ms))
    slow = policies.switchyard(control, seed, band, margin_ms, name=f"{name}-slow-path") \
        if slow_path else None
    return EnvoyPolicy(control, build_profile("cheapest", band), rules, margin_ms, slow, name,
                       seed=seed ^ 0x5EED, split=split, learn_margins=learn_margins,
                       cold_spread=cold_spread, slow_start_s=slow_start_s)
