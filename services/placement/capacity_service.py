"""The ``Capacity`` gRPC service and its wiring into a placement replica (issue 13).

:func:`start_capacity` builds, from ``[capacity]``: the pools (prices from the prices file,
or the pool's own ``usd_per_gpu_hour``, which is then added to the catalog so routes price
it too), the ``local`` provider (real tritonserver processes in explicit model-control mode,
under ``<run_dir>/capacity/``), the footprint book fed by the agents' NVML readings, the
placement gate and the loop; it registers the service on placement's server.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc

from placement.errors import ConfigError
from placement.planner import Plan, PlanPool
from placement.prices import PriceEntry
from services.api.switchyard.v1 import capacity_pb2, capacity_pb2_grpc, telemetry_pb2
from services.capacity.actor import CapacityActor, Control
from services.capacity.local import LocalProvider
from services.capacity.model_control import Baselines, ModelControl
from services.capacity.provider import Instance
from services.config import BackendConfig, MeshConfig
from services.grpc_errors import AnyContext
from services.placement.capacity import CapacityLoop, CapacityState
from services.placement.capacity_footprint import FootprintBook, MeasuredControl, MemoryReading
from services.placement.capacity_gate import PlacementGate, PoolSite
from services.placement.capacity_telemetry import InstanceTelemetry
from services.placement.server import PlacementService
from services.security.identity import peer_address, peer_identities

SERVICE_NAME = capacity_pb2.DESCRIPTOR.services_by_name["Capacity"].full_name


def plan_pools(cfg: MeshConfig, service: PlacementService) -> dict[str, PlanPool]:
    """``[[capacity.pools]]`` as the planner's pools, priced."""
    out = {}
    for i, p in enumerate(cfg.capacity.pools):
        cloud = cfg.region_cloud(p.region)
        usd = p.usd_per_gpu_hour
        if usd is None:
            entry = service.prices.lookup(p.accelerator, cloud, p.region, p.price_class)
            if entry is None:
                raise ConfigError(f"capacity.pools[{i}] {p.id!r}: no price for {p.accelerator} "
                                  f"{p.price_class} in {cloud}/{p.region} in the prices file; "
                                  "set usd_per_gpu_hour")
            usd = entry.usd_per_gpu_hour
        else:
            service.prices.upsert([PriceEntry(p.accelerator, cloud, p.region, p.price_class,
                                              usd, f"[capacity] pool {p.id}")])
        out[p.id] = PlanPool(p.id, cloud, p.region, p.accelerator, p.price_class, usd,
                             p.gpu_memory_gb, p.speed, p.max_concurrency, p.reclaim_risk,
                             p.max_gpus, frozenset(p.variants))
    return out


def gpu_memory(service: PlacementService, backend_id: str) -> MemoryReading | None:
    """A backend's first GPU's memory from its last report (None: no NVML readings, or
    readings no GPU could give: used memory above a total, or a total of 0, from a broken
    NVML read, would be a footprint sample of the difference, averaged into the variant's
    footprint for good)."""
    got = service.gpus.get(backend_id)
    if got is None:
        return None
    gpus: Sequence[telemetry_pb2.GpuReading] = got.sent
    for g in gpus:
        if g.HasField("mem_used_bytes") and g.HasField("mem_total_bytes"):
            if g.mem_total_bytes == 0 or g.mem_used_bytes > g.mem_total_bytes:
                return None
            return MemoryReading(g.mem_used_bytes, g.mem_total_bytes, got.unix_ms)
    return None


def build_loop(cfg: MeshConfig, service: PlacementService) -> CapacityLoop:
    cap = cfg.capacity
    pools = plan_pools(cfg, service)
    sites = {p.id: PoolSite(pools[p.id].cloud, p.region, p.accelerator, p.price_class,
                            p.max_concurrency) for p in cap.pools}
    templates = {p.id: BackendConfig(id=p.id, region=p.region, accelerator=p.accelerator,
                                     price_class=p.price_class, grpc_port=0, metrics_port=0,
                                     variants=p.variants, max_concurrency=p.max_concurrency,
                                     speed=p.speed) for p in cap.pools}
    provider = LocalProvider(cfg, templates, cfg.path(cfg.run_dir) / "capacity")
    gate = PlacementGate(service.fleet, service.hub, service.builder.catalog, sites,
                         settle_s=cap.drain_settle_s)
    book = FootprintBook({v.name: v.memory_gb for v in cap.variants})

    def readings(instance_id: str) -> MemoryReading | None:
        return gpu_memory(service, instance_id)

    baselines: Baselines = {}  # the warm-ups' statistics, shared with the telemetry reader

    def control(inst: Instance) -> Control:
        return MeasuredControl(ModelControl(inst, baselines=baselines), inst, book, readings,
                               cap.memory_headroom, lambda: int(time.time() * 1000))

    actor = CapacityActor(provider, gate, control)
    return CapacityLoop(cap, service.builder.catalog, service.fleet, pools, actor, book,
                        readings, monotonic=service.clock,
                        rate_stale_s=3 * cfg.edge.report_interval_s,
                        rate_window_s=cfg.edge.report_interval_s, on_stop=provider.close,
                        telemetry=InstanceTelemetry(service, gate.routed_instances,
                                                    baselines=baselines),
                        candidates=lambda model, region: service.builder.build(
                            model, region, service.clock()),
                        spread_band=cfg.routing.spread_band, publish=service.hub.publish)


class CapacityService(capacity_pb2_grpc.CapacityServicer):
    def __init__(self, loop: CapacityLoop) -> None:
        self.loop = loop

    async def GetPlan(self, request: capacity_pb2.GetPlanRequest,  # noqa: N802 - proto name
                      context: AnyContext) -> capacity_pb2.GetPlanResponse:
        if request.replan:
            await self.loop.replan("operator")
        else:
            await self.loop.refresh()
        return plan_response(self.loop)

    async def ApprovePlan(self, request: capacity_pb2.ApprovePlanRequest,  # noqa: N802
                          context: AnyContext) -> capacity_pb2.ApprovePlanResponse:
        who = ",".join(peer_identities(context)) or peer_address(context)
        actions = await self.loop.approve(request.plan_id, who)
        return capacity_pb2.ApprovePlanResponse(
            actions=[" ".join(x for x in a if x) for a in actions],
            current=view(self.loop.state.current, self.loop.state))


def view(plan: Plan, state: CapacityState | None = None) -> capacity_pb2.PlacementView:
    out = capacity_pb2.PlacementView(usd_per_hour=plan.usd_per_hour)
    for p in plan.pools:
        out.pools.append(capacity_pb2.PoolPlacement(
            pool=p.pool, gpus=p.gpus, variants=list(p.variants), usd_per_hour=p.usd_per_hour,
            utilisation=p.utilisation,
            instances=state.instances.get(p.pool, []) if state is not None else []))
    return out


def plan_response(loop: CapacityLoop) -> capacity_pb2.GetPlanResponse:
    st = loop.state
    resp = capacity_pb2.GetPlanResponse(apply_mode=loop.settings.apply,
                                        current=view(st.current, st), pending=st.pending,
                                        reason=st.reason, last_error=st.last_error)
    if st.proposal is not None:
        plan = st.proposal.decision.plan
        resp.proposed.CopyFrom(view(plan))
        resp.plan_id = st.proposal.id
        resp.planned_unix_s = st.proposal.planned_unix_s
        served: dict[str, list[str]] = {}
        for p in plan.pools:
            for key, variant, rps in p.serves:
                served.setdefault(key, []).append(f"{p.pool} via {variant}: {rps:.2f}/s")
        for d in st.proposal.problem.demand:
            resp.needs.append(capacity_pb2.ClassNeed(demand_class=d.key, rate_rps=d.rate_rps,
                                                     served_by=served.get(d.key, [])))
    for name in sorted({*loop.book.known(), *(v for p in loop.pools.values()
                                              for v in p.variants)}):
        resp.footprints.append(capacity_pb2.Footprint(
            variant=name, memory_gb=loop.book.footprint_gb(name),
            measured=loop.book.samples(name) > 0, samples=loop.book.samples(name)))
    return resp


def start_capacity(cfg: MeshConfig, service: PlacementService,
                   server: grpc.aio.Server) -> CapacityLoop:
    """Register the Capacity service; the loop starts once the server is up."""
    loop = build_loop(cfg, service)
    capacity_pb2_grpc.add_CapacityServicer_to_server(CapacityService(loop), server)
    return loop
