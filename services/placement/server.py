"""The placement gRPC service: a thin shell around placement/'s fleet state and route builder."""

from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import structlog
from prometheus_client import Gauge

from placement.errors import InvalidRequest, NotRegistered
from placement.explain import allowed_regions, explain_call
from placement.fleet import FleetState
from placement.model import Availability, CallContext, Hints
from placement.prices import PriceCatalog
from placement.registry import PROFILES, build_profile
from placement.routes import RouteBuilder
from services.api.switchyard.v1 import (
    fleet_pb2,
    placement_pb2,
    placement_pb2_grpc,
    telemetry_pb2,
)
from services.convert import (
    backend_from_pb,
    backend_to_pb,
    candidate_to_pb,
    price_from_pb,
    stream_seen_from_pb,
)
from services.grpc_errors import AnyContext
from services.placement import peer as peer_state
from services.placement import replicate
from services.placement.hub import RouteHub
from services.placement.identity import LEASE_KEY, EdgeRegions, Registrants, lease_digest
from services.placement.ingest import Readings, Taken, TelemetryIngest
from services.placement.metrics import PlacementMetrics
from services.placement.shard import EVERY_REGION, Ownership, PeerRows
from services.placement.validate import check_backend, check_observations
from services.security.identity import peer_address, peer_identities

log = structlog.get_logger("switchyard.placement")

def _lease(context: AnyContext | None) -> bytes:
    """The digest of the caller's lease token (metadata ``LEASE_KEY``; b"" without one)."""
    if context is None:
        return b""
    for key, value in context.invocation_metadata() or ():
        if key == LEASE_KEY:
            return lease_digest(value if isinstance(value, str) else value.decode())
    return b""


_SCOPES = {placement_pb2.AVAILABILITY_SCOPE_BACKEND: "backend",
           placement_pb2.AVAILABILITY_SCOPE_REGION: "region",
           placement_pb2.AVAILABILITY_SCOPE_CLOUD: "cloud"}


class PlacementService(placement_pb2_grpc.PlacementServicer):
    def __init__(self, fleet: FleetState, prices: PriceCatalog, builder: RouteBuilder,
                 hub: RouteHub, metrics: PlacementMetrics, slo_margin_ms: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, *, profile: str = "cheapest",
                 spread_band: float = 0.05, fail_fast: bool = False,
                 shard: Ownership = EVERY_REGION, peer_rows: PeerRows | None = None) -> None:
        """``profile``, ``spread_band``, ``fail_fast``: the edges' routing settings, so that
        ``Explain`` reports what an edge would do. ``shard``: the backend regions this
        replica owns (default every region; ``services/placement/shard.py``);
        ``peer_rows``: with shards, the other shards' rows of a table, which ``Explain``
        explains beside this replica's own (an edge routes on the merge)."""
        self.fleet = fleet
        self.prices = prices
        self.builder = builder
        self.hub = hub
        self.metrics = metrics
        self.slo_margin_ms = slo_margin_ms
        self.clock = clock
        self.profile = profile
        self.spread_band = spread_band
        self.fail_fast = fail_fast
        self.shard = shard
        self.peer_rows = peer_rows
        self.ingest = TelemetryIngest(fleet, builder.settings.stale_after_s)
        self.registrants = Registrants(builder.settings.stale_after_s)  # who holds a backend id
        self.edge_regions = EdgeRegions()  # the region each edge id reports for
        self.placement_id = f"placement-{uuid.uuid4().hex[:8]}"
        # an operator's availability change, forwarded to the other replicas (main sets it
        # when this replica has peers) and the newest applied per scope and target
        self.fanout: replicate.AvailabilityFanout | None = None
        self.stamps = replicate.Stamps()
        # WatchRoutes yields each update pre-serialised (bytes shared by every watcher of a
        # region); main.register() sets this with a serializer that passes bytes through.
        self.raw_updates = False
        Gauge("switchyard_placement_route_backlog_backends",
              "Changed backends whose route rows are not rebuilt and pushed yet",
              registry=metrics.registry).set_function(
            lambda: self.hub.backlog + len(self.fleet.dirty))

    @property
    def gpus(self) -> Mapping[str, Readings]:
        """Each backend's GPU readings from its last used report, as sent (read-only)."""
        return self.ingest.readings

    def _changed(self) -> None:
        self.hub.changed()

    async def RegisterBackend(self, request: placement_pb2.RegisterBackendRequest,
                              context: AnyContext
                              ) -> placement_pb2.RegisterBackendResponse:
        b = request.backend
        check_backend(b, self.builder.catalog, self.prices)
        self.shard.check(b.id, b.region)
        self.registrants.admit(b.id, b.endpoint, peer_identities(context), peer_address(context),
                               self.clock(), self.fleet.backends.get(b.id), _lease(context))
        self.fleet.register(backend_from_pb(b))
        log.info("backend_registered", backend=b.id, endpoint=b.endpoint, region=b.region)
        self._changed()
        return placement_pb2.RegisterBackendResponse(backend_id=b.id, version=self.fleet.version)

    async def DeregisterBackend(self, request: placement_pb2.DeregisterBackendRequest,
                                context: AnyContext
                                ) -> placement_pb2.DeregisterBackendResponse:
        self.registrants.may_deregister(request.backend_id, self.clock(),
                                        self.fleet.backends.get(request.backend_id),
                                        _lease(context))
        self.ingest.forget(request.backend_id)
        self.registrants.forget(request.backend_id)
        if not self.fleet.deregister(request.backend_id):
            raise NotRegistered(f"backend_id {request.backend_id!r} is not registered "
                                f"(registered: {len(self.fleet.backends)}; see switchyard "
                                "status)")
        log.info("backend_deregistered", backend=request.backend_id)
        self._changed()
        return placement_pb2.DeregisterBackendResponse(existed=True)

    async def StreamTelemetry(self, request_iterator: AsyncIterator[telemetry_pb2.TelemetryReport],
                              context: AnyContext) -> telemetry_pb2.TelemetryAck:
        accepted = ignored = 0
        refused: list[str] = []  # implausible counters (services.placement.plausible)
        stream = uuid.uuid4().hex
        peer = peer_address(context)
        may_report = functools.partial(self.registrants.may_report, token=_lease(context))
        try:
            async for message in request_iterator:
                taken = Taken()
                try:  # an agent's round may come as one message (TelemetryReport.more)
                    self.ingest.take(message, stream, peer, self.clock(), taken, may_report)
                finally:  # what a batch took before a bad report counts and gets published
                    ignored += taken.ignored
                    for why in taken.refused:
                        self.metrics.telemetry_refused.labels(why.reason).inc()
                        refused.append(why.detail)
                    if taken.used:
                        self.metrics.telemetry.inc(taken.used)
                        accepted += taken.used
                        if taken.flipped:  # ready <-> not ready, a hardware verdict: first
                            self.hub.urgent(*taken.flipped)
                        else:
                            self._changed()
        finally:
            self.ingest.owners.release(stream)
        note = (f"{ignored} reports ignored: another agent owns those backends' telemetry, "
                "or their registrant holds them by a lease token this stream did not carry"
                if ignored else "")
        if refused:
            note += ("; " if note else "") + (
                f"{len(refused)} reports refused as implausible, not used (first: "
                f"{refused[0][:300]})")
        return telemetry_pb2.TelemetryAck(accepted=accepted, message=note)

    async def ReportObservations(self, request: telemetry_pb2.ObservationReport,
                                 context: AnyContext) -> telemetry_pb2.ObservationAck:
        check_observations(request, self.builder.catalog, self.fleet)
        now = self.clock()
        self.edge_regions.admit(request.edge_id, request.edge_region, now)
        for o in request.observations:
            if o.deployment_id.split("/", 1)[0] not in self.fleet.backends:
                continue  # deregistered (or never registered): nothing routes on it
            if o.samples:
                self.fleet.observe(request.edge_region, o.deployment_id, o.samples, o.p95_ms,
                                   now)
            self.fleet.observe_use(request.edge_region, request.edge_id, o.deployment_id,
                                   o.calls_per_s, now)
            backend_id = o.deployment_id.split("/", 1)[0]
            state = self.fleet.backends.get(backend_id)
            if o.rtt_ms > 0 and state is not None:
                self.fleet.observe_rtt(request.edge_region, state.backend.region, o.rtt_ms)
            if o.HasField("streams"):  # LLM streams: token speeds and cost (issue 14)
                self.fleet.observe_streams((request.edge_region, request.edge_id),
                                           o.deployment_id, stream_seen_from_pb(o.streams), now)
        self._changed()
        return telemetry_pb2.ObservationAck()

    async def WatchRoutes(self, request: placement_pb2.WatchRoutesRequest,
                          context: AnyContext
                          ) -> AsyncIterator[placement_pb2.RouteUpdate]:
        if not request.edge_region:
            raise InvalidRequest("WatchRoutes needs edge_region")
        watcher = self.hub.subscribe(request.edge_id, request.edge_region)
        log.info("edge_watching", edge=request.edge_id, region=request.edge_region)
        try:
            # No await between the snapshot and take(): later changes stay pending. A kept
            # snapshot comes with the pushes published since it (snapshot_payload).
            region = request.edge_region
            if self.raw_updates:
                first: placement_pb2.RouteUpdate | bytes = self.hub.snapshot_payload(
                    region, self.placement_id, watcher)
            else:
                first = placement_pb2.RouteUpdate(
                    version=self.hub.version, snapshot=True,
                    tables=self.hub.published(region), placement_id=self.placement_id)
                watcher.take()
            yield first  # type: ignore[misc]  # bytes pass through main.register's serializer
            while True:
                await watcher.wake.wait()
                push = watcher.take_push()
                if push is None:
                    continue
                if self.raw_updates:
                    yield push.payload(region, self.placement_id)  # type: ignore[misc]
                else:
                    yield placement_pb2.RouteUpdate(version=push.version,
                                                    deltas=push.deltas(region),
                                                    placement_id=self.placement_id)
        finally:
            self.hub.unsubscribe(watcher)
            log.info("edge_left", edge=request.edge_id, region=request.edge_region)

    async def GetRouteTables(self, request: placement_pb2.GetRouteTablesRequest,
                             context: AnyContext
                             ) -> placement_pb2.GetRouteTablesResponse:
        if request.edge_region and request.edge_region not in self.builder.catalog.regions:
            raise InvalidRequest(f"edge_region {request.edge_region[:64]!r} is not a region of "
                                 f"the catalog {sorted(self.builder.catalog.regions)}")
        regions = [request.edge_region] if request.edge_region else list(self.hub.regions)
        tables = [t for r in regions for t in self.hub.snapshot(r)]
        return placement_pb2.GetRouteTablesResponse(tables=tables, version=self.hub.version)

    async def Explain(self, request: placement_pb2.ExplainRequest,
                      context: AnyContext) -> placement_pb2.ExplainResponse:
        if request.HasField("stream"):  # its choice depends on one edge's state
            raise InvalidRequest("an LLM stream's choice is an edge's: ask its EdgeAdmin."
                                 "Explain (switchyard explain --stream)")
        model = self.builder.catalog.model(request.model)
        if request.edge_region not in self.builder.catalog.regions:
            raise InvalidRequest(f"edge_region {request.edge_region!r} is not a region "
                                 f"{sorted(self.builder.catalog.regions)}")
        if not (request.slo_ms == 0 or 0 < request.slo_ms < math.inf):
            raise InvalidRequest(f"slo_ms {request.slo_ms!r} must be a finite number of ms "
                                 "> 0 (or unset: the model's default)")
        if not 0.0 <= request.min_quality <= 1.0:
            raise InvalidRequest(f"min_quality {request.min_quality!r} must be within [0, 1]")
        if request.HasField("max_cost_usd") and not request.max_cost_usd >= 0.0:  # NaN too
            raise InvalidRequest(f"max_cost_usd {request.max_cost_usd!r} must be a number of "
                                 "dollars >= 0 (or unset: no cap)")
        slo = request.slo_ms or model.default_slo_ms
        name = request.profile or self.profile
        if name not in PROFILES:
            raise InvalidRequest(f"profile {name!r} is not a routing profile (known: "
                                 f"{list(PROFILES)})")
        hints = Hints(slo_ms=slo, min_quality=request.min_quality,
                      max_cost_usd=(request.max_cost_usd if request.HasField("max_cost_usd")
                                    else math.inf),
                      allowed_regions=allowed_regions(request.allowed_regions,
                                                      frozenset(self.builder.catalog.regions)),
                      fail_fast=self.fail_fast)
        ctx = CallContext(hints, self.slo_margin_ms)
        cands = self.builder.build(request.model, request.edge_region, self.clock())
        missing: list[str] = []
        if self.peer_rows is not None:  # sharded: the table an edge merges from every shard
            theirs, missing = await self.peer_rows(request.model, request.edge_region)
            cands = [*cands, *theirs]
        ex = explain_call(build_profile(name, self.spread_band), cands, ctx)
        summary = ex.summary + "".join(
            f"; {key} did not answer: its deployments are not in this explanation"
            for key in missing)
        resp = placement_pb2.ExplainResponse(
            model=request.model, edge_region=request.edge_region, slo_ms=slo,
            profile=ex.profile, slo_met=ex.slo_met, summary=summary,
            chosen_deployment_id=ex.chosen.deployment_id if ex.chosen else "",
            spread_band=ex.spread_band)
        for v in ex.verdicts:
            resp.candidates.append(placement_pb2.ExplainedCandidate(
                candidate=candidate_to_pb(v.candidate), feasible=v.feasible, reason=v.reason,
                score=v.score))
        return resp

    async def ListBackends(self, request: placement_pb2.ListBackendsRequest,
                           context: AnyContext
                           ) -> placement_pb2.ListBackendsResponse:
        from placement.hardware import assess

        now = self.clock()
        resp = placement_pb2.ListBackendsResponse(version=self.fleet.version,
                                                  placement_id=self.placement_id)
        for name, cloud in sorted(self.builder.catalog.regions.items()):
            resp.regions.append(fleet_pb2.Region(name=name, cloud=cloud))
        for bid in sorted(self.fleet.backends):
            s = self.fleet.backends[bid]
            snap = s.last
            verdict = assess(list(snap.gpus)) if snap else None
            healthy, reason = True, "registered; no telemetry yet"
            if snap is not None:
                age = now - (s.last_at or now)
                healthy = snap.ready and not (verdict and verdict.removed)
                reason = (verdict.removed if verdict and verdict.removed else
                          "ready" if snap.ready else "Triton not ready")
                if age > self.builder.settings.stale_after_s:
                    reason += f" (telemetry stale: {age:.0f} s old)"
            resp.backends.append(placement_pb2.BackendStatus(
                backend=backend_to_pb(s.backend), availability=int(s.availability),
                healthy=healthy, health_reason=reason,
                telemetry_source=(telemetry_pb2.TELEMETRY_SOURCE_UNSPECIFIED if snap is None
                                  else telemetry_pb2.TELEMETRY_SOURCE_SIMULATED if snap.simulated
                                  else telemetry_pb2.TELEMETRY_SOURCE_NVML),
                penalty_reason=verdict.penalty_reason if verdict else "",
                gpus=readings.sent if (readings := self.ingest.readings.get(bid)) else [],
                last_report_unix_ms=readings.unix_ms if readings else 0,
                telemetry_owner=self.ingest.owners.owner(bid),
                telemetry_ignored=self.ingest.owners.ignored(bid)))
        return resp

    async def SetAvailability(self, request: placement_pb2.SetAvailabilityRequest,
                              context: AnyContext
                              ) -> placement_pb2.SetAvailabilityResponse:
        scope = _SCOPES.get(request.scope)
        if scope is None or not request.target:
            raise InvalidRequest("SetAvailability needs scope (backend, region or cloud) "
                                 "and target")
        if request.availability not in {int(a) for a in Availability}:
            raise InvalidRequest(f"SetAvailability needs availability (active, drained, "
                                 f"cordoned); got {request.availability}")
        meta = dict(context.invocation_metadata() or ()) if context is not None else {}
        forwarded = meta.get(replicate.FORWARDED)
        at_ns = replicate.now_ns()
        if forwarded:  # another replica's operator change (services/placement/replicate.py)
            try:
                at_ns = int(meta.get(replicate.AT, ""))
            except ValueError:
                raise InvalidRequest(f"a forwarded SetAvailability needs {replicate.AT} "
                                     "(ns since the epoch)") from None
        if not self.stamps.newer(request, at_ns):  # a late retry of an older change
            log.info("availability_older_ignored", scope=scope, target=request.target,
                     forwarded_by=forwarded)
            return placement_pb2.SetAvailabilityResponse(version=self.hub.version)
        ids = self.fleet.set_availability(scope, request.target,
                                          Availability(request.availability))
        log.info("availability_set", scope=scope, target=request.target,
                 availability=Availability(request.availability).name, backends=ids,
                 forwarded_by=forwarded)
        self.hub.publish()  # operators want a drain to take effect now, not coalesced
        if not forwarded and self.fanout is not None:  # every replica applies it
            missing = await self.fanout.forward(request, at_ns)
            if missing:
                log.warning("availability_not_on_every_replica", peers=missing,
                            action="retried until they answer; a replica that restarts "
                            "loads it from a peer")
        return placement_pb2.SetAvailabilityResponse(backend_ids=ids, version=self.hub.version)

    async def GetLearnedState(self, request: placement_pb2.LearnedStateRequest,
                              context: AnyContext) -> placement_pb2.LearnedState:
        """A starting peer's warm restart (:mod:`services.placement.peer`)."""
        log.info("learned_state_sent", to=request.placement_id or "a peer",
                 backends=len(self.fleet.backends))
        return await peer_state.answer(self.fleet, self.clock(), self.placement_id)

    async def UpdatePrices(self, request: placement_pb2.UpdatePricesRequest,
                           context: AnyContext
                           ) -> placement_pb2.UpdatePricesResponse:
        for i, p in enumerate(request.prices):
            if (not 0.0 <= p.usd_per_gpu_hour < math.inf or not p.accelerator or not p.cloud
                    or not p.price_class):
                raise InvalidRequest(f"prices[{i}] needs accelerator, cloud, price_class and "
                                     f"a finite, non-negative usd_per_gpu_hour; got {p}")
        entries = [price_from_pb(p) for p in request.prices]
        if request.replace:
            self.prices.replace(entries)
        else:
            self.prices.upsert(entries)
        self.fleet.version += 1
        self.fleet.all_dirty = True  # every cost changes
        log.info("prices_updated", count=len(entries), replace=request.replace)
        self.hub.publish()
        return placement_pb2.UpdatePricesResponse(prices=len(self.prices),
                                                  version=self.hub.version)
