"""Placement's route tables compiled to Envoy resources: what an Envoy edge of region R gets.

Per logical model M: one cluster per deployment an order reaches or placement keeps
unusable (``edge_deployments``: not the rows ranked past every order's cut) and one
aggregate cluster per failover order (``clusters.py``; the orders from ``order.py``:
``model:<M>`` for the model's default SLO, ``model:<M>:slo<i>`` for its i-th SLO class, the
names kept while the classes are, so a new order updates a cluster in place), the routes of
the region (``routes.py``: by model name and SLO class, prices in route metadata, the slow
path first), and per node the listener (``listener.py``) and its ``slow-path`` cluster.
``[security]`` TLS is ``tls.py``; the knobs, names and the versioned ``Resource`` are
``envoy_types.py``.

Resources are built as dicts shaped like Envoy's YAML and parsed into the ``xds-protos``
messages, which checks every field name. Everything the modules above define is importable
from here, as before they were split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog
from envoy.config.cluster.v3 import cluster_pb2

from placement.edge_learning import Learned
from placement.model import Candidate
from placement.pipeline import Profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.clusters import (
    _is_ip,
    deployment_cluster,
    model_cluster,
    retry_concurrency,
    slow_path_cluster,
)
from services.xds.envoy_types import (
    CLUSTER,
    LISTENER,
    LISTENER_NAME,
    PLACEMENT_CLUSTER,
    ROUTE,
    SLOW_PATH_CLUSTER,
    SLOW_PATH_MAX_REQUESTS,
    EnvoySettings,
    Resource,
    cluster_name,
    model_cluster_name,
    resource,
    route_config_name,
)
from services.xds.listener import listener
from services.xds.lua import METADATA_NAMESPACE
from services.xds.order import RankMemo
from services.xds.plan import Table, plan_region
from services.xds.routes import (
    ModelRoutes,
    _route_action,
    per_try_timeout_s,
    rotation_cluster_name,
    route_configuration,
)

log = structlog.get_logger("switchyard.xds")

__all__ = [
    "CLUSTER", "LISTENER", "LISTENER_NAME", "PLACEMENT_CLUSTER", "RETIRE_COMPILES", "ROUTE",
    "SLOW_PATH_CLUSTER", "SLOW_PATH_MAX_REQUESTS", "CompileCache", "EnvoySettings",
    "ModelRoutes", "RegionConfig", "Resource",
    "_route_action", "aggregate_orders", "cluster_name", "compile_region", "deployment_cluster",
    "edge_deployments", "listener",
    "model_cluster", "model_cluster_name", "per_try_timeout_s", "resource",
    "retry_budgets", "retry_concurrency", "route_config_name", "route_configuration",
    "slow_path_cluster",
]


@dataclass(frozen=True)
class RegionConfig:
    """Everything an edge of one region needs except its listener (which is per node)."""

    region: str
    clusters: dict[str, Resource]
    routes: dict[str, Resource]
    models: dict[str, ModelRoutes]

    @property
    def orders(self) -> dict[str, list[str]]:
        """Model -> the default SLO's failover order."""
        return {m: list(r.default) for m, r in self.models.items()}


class CompileCache:
    """What ``compile_region`` reuses across compiles of one ADS server: each resource (its
    message, serialized hash and version) keyed by what it is made of, so a compile rebuilds
    only what changed (issues 12 + 15: at 10,000 deployments a compile that rebuilt every
    cluster held placement's loop for seconds on every publish).

    - a deployment's cluster by (settings, deployment, endpoint, variant, backend, region):
      ``deployment_cluster`` reads nothing else of the row; a new one is a copy of a template
      (one ``deployment_cluster`` per settings and address kind) with the row's fields set,
      checked once per compile against ``deployment_cluster`` itself (a mismatch, e.g. after
      ``clusters.py`` started reading another field, turns the template off for good);
    - an aggregate cluster by (settings, name, order);
    - a region's route configuration by (settings, region, its plan's routes);
    - per region, its rows' filter verdicts at each SLO the plan ranks them at
      (``order.RankMemo``): the pipeline runs on the rows that changed only.

    Entries a compile did not use are dropped after it (a cache the size of the fleet).

    ``retire_compiles``: an aggregate cluster the region's routes stop naming (an SLO class
    gone, a weighted rotation dropped) stays, with its last order, for this many more
    compiles of the region (0: it goes at once, the output then equal to a compile from
    scratch). A call already routed keeps its route's cluster name for its retries and
    hedges, and Envoy's router answers a retry whose cluster is gone "no healthy upstream"
    (``Filter::doRetry``: "Clusters can technically get removed by CDS during a retry"):
    in the drills, bursts of 1-4 calls right after a kill or a restore reordered a region,
    with no ``upstream_cx_none_healthy`` counted (``RETIRE_COMPILES``)."""

    def __init__(self, retire_compiles: int = 0) -> None:
        self.retire_compiles = retire_compiles
        # region -> aggregates its last compile named, and those retired: name -> (order,
        # compiles left)
        self.named: dict[str, dict[str, tuple[str, ...]]] = {}
        # region -> each aggregate's retry budget in its last compile (a retired one keeps it)
        self.budgets: dict[str, dict[str, int]] = {}
        self.retired: dict[str, dict[str, tuple[tuple[str, ...], int]]] = {}
        self.deployments: dict[tuple[object, ...], Resource] = {}
        self.aggregates: dict[tuple[object, ...], Resource] = {}
        self.routes: dict[str, tuple[object, Resource]] = {}
        self.memos: dict[str, RankMemo] = {}  # region -> its rows' filter verdicts
        self.rows: dict[str, dict[bytes, Candidate]] = {}  # region -> its rows, converted
        self.templates: dict[tuple[EnvoySettings, bool], cluster_pb2.Cluster] = {}
        self.template_ok = True
        self.built = 0  # resources built (not reused), for tests and benchmarks

    @classmethod
    def serving(cls) -> CompileCache:
        """The ADS server's cache: retired aggregates kept ``RETIRE_COMPILES`` compiles."""
        return cls(retire_compiles=RETIRE_COMPILES)

    def deployment(self, c: placement_pb2.Candidate, s: EnvoySettings,
                   used: dict[tuple[object, ...], Resource], check: bool) -> Resource:
        key = (s, c.deployment_id, c.endpoint, c.variant, c.backend_id, c.region)
        got = self.deployments.get(key)
        if got is None:
            msg = self._from_template(c, s) if self.template_ok else None
            if msg is not None and check:
                want = deployment_cluster(c, s)
                if (msg.SerializeToString(deterministic=True)
                        != want.SerializeToString(deterministic=True)):
                    log.warning("xds_cluster_template_off", deployment=c.deployment_id)
                    self.template_ok, msg = False, want
            got = resource(cluster_name(c.deployment_id), msg or deployment_cluster(c, s))
            self.built += 1
        used[key] = got
        return got

    def _from_template(self, c: placement_pb2.Candidate,
                       s: EnvoySettings) -> cluster_pb2.Cluster | None:
        host, _, port = c.endpoint.rpartition(":")
        if not port.isdigit():
            return None  # ``deployment_cluster`` says what is wrong with it
        ip = _is_ip(host)
        tmpl = self.templates.get((s, ip))
        if tmpl is None:
            tmpl = self.templates[(s, ip)] = deployment_cluster(placement_pb2.Candidate(
                deployment_id="t/t", endpoint="127.0.0.1:1" if ip else "template.invalid:1",
                variant="t", backend_id="t", region="t"), s)
        msg = cluster_pb2.Cluster()
        msg.CopyFrom(tmpl)
        name = cluster_name(c.deployment_id)
        msg.name = name
        msg.load_assignment.cluster_name = name
        lb = msg.load_assignment.endpoints[0].lb_endpoints[0]
        sock = lb.endpoint.address.socket_address
        sock.address, sock.port_value = host, int(port)
        meta = lb.metadata.filter_metadata[METADATA_NAMESPACE].fields
        meta["deployment"].string_value = c.deployment_id
        meta["variant"].string_value = c.variant
        meta["backend"].string_value = c.backend_id
        meta["region"].string_value = c.region
        return msg

    def aggregate(self, name: str, order: tuple[str, ...], s: EnvoySettings,
                  used: dict[tuple[object, ...], Resource],
                  min_retry_concurrency: int | None = None) -> Resource:
        key = (s, name, order, min_retry_concurrency)
        got = self.aggregates.get(key)
        if got is None:
            got = resource(name, model_cluster(name, order, s, min_retry_concurrency))
            self.built += 1
        used[key] = got
        return got

    def route(self, region: str, models: dict[str, ModelRoutes], s: EnvoySettings) -> Resource:
        key = (s, _routes_key(models))
        cached = self.routes.get(region)
        if cached is not None and cached[0] == key:
            return cached[1]
        rc = route_config_name(region)
        got = resource(rc, route_configuration(region, models, s))
        self.built += 1
        self.routes[region] = (key, got)
        return got


def _routes_key(models: dict[str, ModelRoutes]) -> tuple[object, ...]:
    """Everything of a region's plan ``route_configuration`` reads, hashable."""
    return tuple((m, r.default, r.classes, r.default_feasible, r.default_slo_ms,
                  tuple(sorted(r.cost_usd.items())),
                  tuple(sorted(r.rotations.items(), key=lambda kv: -1 if kv[0] is None
                               else kv[0])))
                 for m, r in sorted(models.items()))


def compile_region(region: str, tables: Iterable[placement_pb2.RouteTable], profile: Profile,
                   s: EnvoySettings, learned: Learned | None = None,
                   cache: CompileCache | None = None) -> RegionConfig:
    """``learned``: the region's class rates and miss margins (``placement.edge_learning``): the
    orders and their weighted rotations come from ``plan.plan_region``, which the cost
    simulator's Envoy row runs too; without it, plain orders. ``cache``: resources kept from
    earlier compiles (``CompileCache``; the output is the same with or without it)."""
    cache = cache or CompileCache()
    check = True  # one new deployment cluster per compile checked against the template
    deployments: dict[tuple[object, ...], Resource] = {}
    aggregates: dict[tuple[object, ...], Resource] = {}
    clusters: dict[str, Resource] = {}
    tables = list(tables)
    memo = cache.memos.setdefault(region, RankMemo())
    rows = cache.rows.get(region, {})
    now: dict[bytes, Candidate] = {}

    def row(c: placement_pb2.Candidate) -> Candidate:
        """The row as placement's type: the object of the last compile when it is unchanged
        (the memo knows rows by identity)."""
        b = c.SerializeToString(deterministic=True)
        got = now.get(b) or rows.get(b)
        if got is None:
            got = candidate_from_pb(c)
        now[b] = got
        return got

    models = plan_region({t.model: Table([row(c) for c in t.candidates], t.default_slo_ms)
                          for t in tables}, profile, s.slo_margin_ms, learned, memo, s.cap)
    memo.end_round()
    cache.rows[region] = now
    named = aggregate_orders(models)
    budgets = retry_budgets(models, s)
    retired = retiring(cache, region, named)
    last = cache.budgets.get(region, {})
    budgets.update({name: last[name] for name, _ in retired if name in last})
    named += retired
    cache.budgets[region] = budgets
    wanted = edge_deployments(tables, named)
    for table in tables:
        for c in table.candidates:
            name = cluster_name(c.deployment_id)
            if c.deployment_id in wanted and name not in clusters:
                before = cache.built
                clusters[name] = cache.deployment(c, s, deployments, check)
                check = check and cache.built == before
    for name, order in named:
        clusters[name] = cache.aggregate(name, order, s, aggregates, budgets.get(name))
    cache.deployments.update(deployments)
    cache.aggregates.update(aggregates)
    _keep_only(cache.deployments, deployments)
    _keep_only(cache.aggregates, aggregates)
    rc = route_config_name(region)
    return RegionConfig(region, clusters, {rc: cache.route(region, models, s)}, models)


# Compiles an aggregate stays after the routes stop naming it (``CompileCache``): a region is
# compiled on every publish that changes its tables and every ``learn_every_s`` while it
# learns, about once a second while a drill reorders it, so a few seconds there, longer when
# calm; longer than the drills' 2 s deadline.
RETIRE_COMPILES = 8


def retiring(cache: CompileCache, region: str, named: Sequence[tuple[str, tuple[str, ...]]]
             ) -> list[tuple[str, tuple[str, ...]]]:
    """The aggregates the region's routes named in earlier compiles but no longer do, kept
    ``cache.retire_compiles`` compiles with their last order (a named one is no longer
    retired); records this compile's names for the next."""
    now = dict(named)
    retired = cache.retired.setdefault(region, {})
    if cache.retire_compiles > 0:
        for name, order in cache.named.get(region, {}).items():
            if name not in now:
                retired[name] = (order, cache.retire_compiles + 1)
    for name in list(retired):
        order, left = retired[name]
        if name in now or left <= 1:
            del retired[name]
        else:
            retired[name] = (order, left - 1)
    cache.named[region] = now
    return [(name, order) for name, (order, _) in sorted(retired.items())]


def aggregate_orders(models: dict[str, ModelRoutes]) -> list[tuple[str, tuple[str, ...]]]:
    """Every aggregate cluster a region's routes name, with its failover order: per model its
    default SLO's, each SLO class's and each weighted rotation's (empty orders have none)."""
    named = [(name, tuple(order)) for model, m in models.items() for name, order in (
        (model_cluster_name(model), m.default),
        *((model_cluster_name(model, i), k.order) for i, k in enumerate(m.classes)),
        *((rotation_cluster_name(model, i, order[0]), order)
          for i, rots in m.rotations.items() for _, order in rots))]
    return [(name, order) for name, order in named if order]


def retry_budgets(models: dict[str, ModelRoutes], s: EnvoySettings) -> dict[str, int]:
    """Each aggregate's ``min_retry_concurrency`` (``clusters.retry_concurrency``) from the
    calls its route's plan puts through it (``ModelRoutes.inflight``); those without any
    planned (the order of a split route, a class nothing was learned of) hold the floor."""
    out: dict[str, int] = {}
    for model, m in models.items():
        for i, planned in m.inflight.items():
            for first, inflight in planned.items():
                name = model_cluster_name(model, i) if first is None else \
                    rotation_cluster_name(model, i, first)
                out[name] = retry_concurrency(inflight, s.retry_budget_percent,
                                              s.retry_min_concurrency)
    return out


def edge_deployments(tables: Iterable[placement_pb2.RouteTable],
                     named: Iterable[tuple[str, Sequence[str]]]) -> frozenset[str]:
    """The deployments whose clusters an edge of the region gets (issues 12 + 15): those an
    aggregate its routes name may send a call to, and those placement keeps a row for with a
    reason no call may use them (drained, not ready, no price, hardware): they are the ones
    expected back, so their cluster stays warm at the edge for the return (no cluster
    warming on an undrain), and an edge's config shows them as known but routed to by no
    order (``services.drills.edges``). Every other row (ranked past every order's cut,
    ``EnvoySettings.cap``) has no cluster there: at 10,000 deployments a first push of every
    cluster was 5.2 MB per edge. A deployment enters an edge's clusters in the push whose
    aggregates start naming it, and leaves (a delta removal, after the routes) when none
    does."""
    wanted = {d for _, order in named for d in order}
    wanted.update(c.deployment_id for t in tables for c in t.candidates if c.dropped_reason)
    return frozenset(wanted)


def _keep_only(kept: dict[tuple[object, ...], Resource],
               used: dict[tuple[object, ...], Resource]) -> None:
    """Drop what the last compile did not use, unless other regions may (the cache is the
    server's, shared by its regions): only entries used by none in a while go, by size."""
    if len(kept) > 4 * max(len(used), 1024):
        for key in [k for k in kept if k not in used]:
            del kept[key]
