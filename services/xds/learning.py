"""What placement learns of each Envoy edge region from its access log, for the next push.

``placement.edge_learning.EdgeLearning`` keeps one region's class rates, miss margins and
slow-path load; this module feeds it from the entries Envoy streams to placement
(``feedback.py``) and hands ``compile_region`` the region's ``Learned`` at each compile
(``server.py``: once per hub version, so pushes stay coalesced as before, and every
``learn_every_s`` between publishes while the region has something to learn or to forget:
a steady fleet publishes nothing, and the split must still follow the calls).

An entry names its call's class the way the routes did: the model (``x-switchyard-model``)
and the whole-ms SLO (``x-switchyard-slo-ms``), both set by the listener's Lua and logged as
request headers (``listener.py``); the call's exact SLO is the Lua's dynamic metadata
(``switchyard.slo_ms``). It is learned under ``(model, whole-ms SLO)`` (``(model, None)``
without one: the default route), as ``plan.plan_region`` reads ``Learned``: it sums the
SLOs each route matches, so a class's rate does not scatter when a route's range moves
with the latency estimates. A call served by a deployment met its SLO when Envoy answered
it within its own SLO; its margin is kept at its whole-ms SLO, where the compile reads it.
Calls Envoy sent to its slow path count as the slow path's load on the deployment that
served them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from envoy.data.accesslog.v3 import accesslog_pb2

from placement.edge_learning import EdgeLearning, Learned
from placement.model import Candidate
from services.xds.envoy_types import SLOW_PATH_CLUSTER
from services.xds.lua import METADATA_NAMESPACE, MODEL_HEADER, SLO_HEADER
from services.xds.plan import Key, route
from services.xds.routes import ModelRoutes

MIN_RATE = 0.01  # calls/s: a learned rate below this has decayed (no recompile to follow it)


@dataclass(frozen=True)
class CallClass:
    key: Key
    slo_ms: float  # the SLO the class is compiled at (its margins are kept there)


def call_class(models: Mapping[str, ModelRoutes], model: str,
               slo_header: str) -> CallClass | None:
    """The class of a call to ``model`` whose whole-ms SLO header is ``slo_header`` (empty:
    none) under ``models``' routes (``plan.route``: as Envoy matched it); None for a model
    the routes do not serve."""
    try:
        slo = int(slo_header) if slo_header else None
    except ValueError:
        slo = None
    got = route(models, model, slo)
    return None if got is None else CallClass(got.key, got.slo_ms)


def _ms(d: object) -> float:
    return float(d.seconds) * 1e3 + float(d.nanos) / 1e6  # type: ignore[attr-defined]


class RegionLearning:
    """One ``EdgeLearning`` per edge region, fed by the access log, read at each compile."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 make: Callable[[], EdgeLearning] = EdgeLearning) -> None:
        self.clock = clock
        self.make = make
        self.regions: dict[str, EdgeLearning] = {}
        self.models: dict[str, Mapping[str, ModelRoutes]] = {}  # region -> last compile's
        self.calls = 0  # entries counted in a class, all regions
        self.unclassified = 0  # entries with a model header no compiled route knew
        self._news: dict[str, int] = {}  # region -> entries learned from since its compile
        self._holding: dict[str, bool] = {}  # region -> its last Learned was not empty

    def _region(self, region: str) -> EdgeLearning:
        got = self.regions.get(region)
        if got is None:
            got = self.regions[region] = self.make()
        return got

    def compiled(self, region: str, models: Mapping[str, ModelRoutes]) -> None:
        """The routes the region's Envoys now get: what later entries are classed by."""
        self.models[region] = models

    def learned(self, region: str, cands: Mapping[str, Candidate]) -> Learned:
        """Close the region's window now (a compile for a push) and return what to compile."""
        got = self._region(region).learned(self.clock(), cands)
        self._news[region] = 0
        self._holding[region] = (any(r >= MIN_RATE for r in got.rates.values())
                                 or any(e >= MIN_RATE * 1e-3 for e in got.reserved.values())
                                 or any(got.margins.values()))
        return got

    def stale(self, region: str) -> bool:
        """Would a compile now differ from the last one: entries learned from since, or a
        learned state that has to decay even without calls?"""
        return bool(self._news.get(region)) or self._holding.get(region, False)

    def observe(self, region: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
        """One logged request of an Envoy edge of ``region``; True if it was learned from
        (never for a region no compile has routes for)."""
        if region not in self.models:
            # No compile for it yet: placement serves no Envoy there. State is kept only for
            # the regions placement compiles for, whatever region an access-log stream names
            # (nothing removes a region's state, and a stream's node.cluster is the caller's).
            return False
        c = entry.common_properties
        trailers = entry.response.response_trailers
        served_by = trailers.get("x-served-by", "")
        learning = self._region(region)
        if c.upstream_cluster == SLOW_PATH_CLUSTER:
            served = bool(served_by) and trailers.get("grpc-status", "") == "0"
            if served:
                learning.other_path(served_by)
                self._news[region] = self._news.get(region, 0) + 1
            return served
        headers = entry.request.request_headers
        model = headers.get(MODEL_HEADER, "")
        if not model:
            return False  # not a ModelInfer on a model route (Envoy's own reply, liveness)
        klass = call_class(self.models.get(region, {}), model, headers.get(SLO_HEADER, ""))
        if klass is None:
            self.unclassified += 1
            return False
        self.calls += 1
        self._news[region] = self._news.get(region, 0) + 1
        meta = c.metadata.filter_metadata.get(METADATA_NAMESPACE)
        own = (meta.fields["slo_ms"].number_value
               if meta is not None and "slo_ms" in meta.fields else klass.slo_ms)
        learning.call(klass.key, klass.slo_ms)
        if not served_by or trailers.get("grpc-status", "") != "0":
            return True
        # The margin lives at the class's SLO (where the compile reads it); the verdict is
        # the call's own SLO against what Envoy's caller waited.
        learning.served(served_by, klass.slo_ms, _ms(c.time_to_last_downstream_tx_byte),
                        self.clock(), own)
        return True
