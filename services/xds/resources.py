"""Placement's route tables compiled to Envoy resources: what an Envoy edge of region R gets.

Per logical model M: one cluster per deployment and one aggregate cluster per failover order
(``clusters.py``; the orders from ``order.py``: ``model:<M>`` for the model's default SLO,
``model:<M>:slo<i>`` for its i-th SLO class, the names kept while the classes are, so a new
order updates a cluster in place), the routes of the region (``routes.py``: by model name
and SLO class, prices in route metadata, the slow path first), and per node the listener
(``listener.py``) and its ``slow-path`` cluster. ``[security]`` TLS is ``tls.py``; the
knobs, names and the versioned ``Resource`` are ``envoy_types.py``.

Resources are built as dicts shaped like Envoy's YAML and parsed into the ``xds-protos``
messages, which checks every field name. Everything the modules above define is importable
from here, as before they were split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from placement.edge_learning import Learned
from placement.pipeline import Profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.clusters import (
    deployment_cluster,
    model_cluster,
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
from services.xds.plan import Table, plan_region
from services.xds.routes import (
    ModelRoutes,
    _route_action,
    per_try_timeout_s,
    rotation_cluster_name,
    route_configuration,
)

__all__ = [
    "CLUSTER", "LISTENER", "LISTENER_NAME", "PLACEMENT_CLUSTER", "ROUTE", "SLOW_PATH_CLUSTER",
    "SLOW_PATH_MAX_REQUESTS", "EnvoySettings", "ModelRoutes", "RegionConfig", "Resource",
    "_route_action", "cluster_name", "compile_region", "deployment_cluster", "listener",
    "model_cluster", "model_cluster_name", "per_try_timeout_s", "resource",
    "route_config_name", "route_configuration", "slow_path_cluster",
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


def compile_region(region: str, tables: Iterable[placement_pb2.RouteTable], profile: Profile,
                   s: EnvoySettings, learned: Learned | None = None) -> RegionConfig:
    """``learned``: the region's class rates and miss margins (``placement.edge_learning``): the
    orders and their weighted rotations come from ``plan.plan_region``, which the cost
    simulator's Envoy row runs too; without it, plain orders."""
    clusters: dict[str, Resource] = {}
    tables = list(tables)
    for table in tables:
        for c in table.candidates:
            name = cluster_name(c.deployment_id)
            if name not in clusters:
                clusters[name] = resource(name, deployment_cluster(c, s))
    models = plan_region({t.model: Table([candidate_from_pb(c) for c in t.candidates],
                                         t.default_slo_ms) for t in tables},
                         profile, s.slo_margin_ms, learned)
    for model, m in models.items():
        named = [(model_cluster_name(model), m.default),
                 *((model_cluster_name(model, i), k.order) for i, k in enumerate(m.classes)),
                 *((rotation_cluster_name(model, i, order[0]), order)
                   for i, rots in m.rotations.items() for _, order in rots)]
        for name, order in named:
            if order:
                clusters[name] = resource(name, model_cluster(name, order, s))
    rc = route_config_name(region)
    return RegionConfig(region, clusters,
                        {rc: resource(rc, route_configuration(region, models, s))}, models)
