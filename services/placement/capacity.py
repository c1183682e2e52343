"""The capacity loop placement runs: forecast → plan → (approve) → act → audit (issue 13).

Every ``observe_s`` the call rates edges report (``ReportObservations`` →
``FleetState.use``) are summed per demand class and handed to
:class:`placement.plan_cadence.Cadence`, which feeds the forecast and says which re-plan is
due: full plans on a schedule (``interval_s``, ``lead_s`` ahead), GPU counts right-sized
between them (``resize_every_s``), and sooner (not within ``min_replan_s`` of the last) on a
forecast error, a class the last plan did not know, or a class observed above what the plan
serves it (``react_tolerance``); it also says what a plan is solved for. The provisioned-cost
benchmark's planner fleet runs the same :class:`Cadence` with these settings' defaults
(:func:`services.capacity.settings.cadence`), so the simulated day measures this rule.

A class is (model, quality floor, SLO, edge region); edges report rates per deployment, not
per floor and SLO, so a class's floor is inferred from the route table
(:meth:`CapacityLoop.floor`: edges pick the cheapest variant that meets a call's floor, so
calls served by a variant while a lower-quality one was clearly cheaper asked for that
variant's quality) and its SLO is the model's default.

A re-plan is :func:`placement.replan.revise` (the optimum, or GPU counts for the variants
loaded, must pay for its churn: ``cold_start_s`` of each added GPU's price) against the
placement the servers report now. An adopted plan is applied at once (``apply = "auto"``) or
held until ``ApprovePlan`` names it (``"approve"``). Applying is :meth:`CapacityActor.apply`
(adds and loads first, drains and removals last) through the pools' provider and
:class:`PlacementGate`. Each proposal, approval, applied step and failure is one JSON event
on the ``switchyard.audit`` logger (the shape of :mod:`services.security.authz`'s events).

Statically configured ``[[backends]]`` are outside the loop: their calls count as demand, and
the plan provisions the managed pools for all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from placement.catalog import Catalog
from placement.errors import SwitchyardError
from placement.fleet import FleetState
from placement.forecast import ClassKey, DemandForecaster, ForecastSettings
from placement.model import Candidate, Variant
from placement.plan_cadence import Cadence, Due
from placement.planner import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    PoolPlan,
    Problem,
)
from placement.replan import Decision, revise
from placement.routes import PRIOR_COMPUTE_FRACTION_OF_SLO
from services.capacity.actor import ApplyFailed, CapacityActor, PoolTarget
from services.capacity.settings import CapacityConfig, cadence, churn, is_instance_id
from services.capacity.settings import forecast as forecast_settings
from services.placement.capacity_footprint import FootprintBook, Readings

log = structlog.get_logger("switchyard.capacity")
audit = structlog.get_logger("switchyard.audit")


class Poller(Protocol):
    async def poll(self) -> None: ...

    async def close(self) -> None: ...


class NotPending(SwitchyardError):
    """Approval of a plan that is not the pending one."""

    grpc_code = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class Proposal:
    id: str
    decision: Decision
    problem: Problem
    planned_unix_s: float


@dataclass(slots=True)
class CapacityState:
    """What `switchyard plan` shows; owned by the loop, read by the service."""

    current: Plan = field(default_factory=lambda: Plan((), 0.0))
    instances: dict[str, list[str]] = field(default_factory=dict)  # pool -> instance ids
    proposal: Proposal | None = None
    pending: bool = False
    reason: str = "no plan yet"
    last_error: str = ""


class CapacityLoop:
    def __init__(self, settings: CapacityConfig, catalog: Catalog, fleet: FleetState,
                 pools: Mapping[str, PlanPool], actor: CapacityActor, book: FootprintBook,
                 readings: Readings, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 rate_stale_s: float = 10.0, rate_window_s: float = 1.0,
                 forecast: ForecastSettings | None = None,
                 on_stop: Callable[[], Awaitable[None]] | None = None,
                 telemetry: Poller | None = None,
                 candidates: Callable[[str, str], Sequence[Candidate]] = lambda m, r: (),
                 spread_band: float = 0.05,
                 publish: Callable[[], None] = lambda: None) -> None:
        """``on_stop``: closes what the loop acts through (the provider's instances);
        ``telemetry``: polled every round before the demand is read (the instances' own
        statistics, :mod:`services.placement.capacity_telemetry`); ``publish``: pushes the
        route tables now (after :meth:`forget_leftovers`); ``rate_window_s``: what the edges
        count a reported rate over (their report interval: drift's noise allowance)."""
        self.settings = settings
        self.catalog = catalog
        self.fleet = fleet
        self.pools = dict(pools)
        self.actor = actor
        self.book = book
        self.readings = readings
        self.wall = wall
        self.monotonic = monotonic
        self.rate_stale_s = rate_stale_s
        self.rate_window_s = rate_window_s
        self.forecaster = DemandForecaster(forecast or forecast_settings(settings))
        self.cadence = Cadence(cadence(settings), self.forecaster)
        self.churn = churn(settings)
        self.state = CapacityState()
        self._lock = asyncio.Lock()  # one plan applied at a time
        self._task: asyncio.Task[None] | None = None
        self._on_stop = on_stop
        self.telemetry = telemetry
        self.candidates = candidates  # (model, edge region) -> its route table's rows
        self.spread_band = spread_band
        self._publish = publish

    # -- demand ----------------------------------------------------------------------------
    def observed_rates(self) -> dict[ClassKey, float]:
        """Calls/s per class right now, from the rates edges last reported (fresh ones)."""
        now = self.monotonic()
        out: dict[ClassKey, float] = {}
        tables: dict[tuple[str, str], Sequence[Candidate]] = {}
        for dep, by_edge in self.fleet.use.items():
            v = self.catalog.variant(dep.split("/", 1)[1] if "/" in dep else "")
            if v is None:
                continue
            slo = self.catalog.model(v.logical).default_slo_ms
            for (region, _edge), (rate, at) in list(by_edge.items()):
                if (v.logical, region) not in tables:
                    tables[(v.logical, region)] = self.candidates(v.logical, region)
                floor = self.floor(dep, v, tables[(v.logical, region)])
                key = ClassKey(v.logical, floor, slo, region)
                fresh = rate if now - at <= self.rate_stale_s else 0.0
                out[key] = out.get(key, 0.0) + fresh
        return out

    def floor(self, deployment: str, v: Variant, table: Sequence[Candidate]) -> float:
        """The quality floor behind calls ``deployment`` served: its variant's quality when a
        lower-quality deployment was clearly cheaper (beyond the spread band), so the calls
        must have asked for more; else the model's lowest quality (they asked for nothing
        the cheapest choice did not meet)."""
        own = next((c for c in table if c.deployment_id == deployment), None)
        lowest = min(x.quality for x in self.catalog.model(v.logical).variants)
        if own is None:
            return v.quality
        cheaper = any(c.quality < v.quality and not c.dropped_reason
                      and c.cost_usd < own.cost_usd * (1.0 - self.spread_band) for c in table)
        return v.quality if cheaper else lowest

    def observe(self) -> Due | None:
        """Hand the cadence the rates observed now (it feeds the forecast), measure
        footprints; the re-plan due now, if any."""
        due = self.cadence.observe(self.wall(), self.observed_rates(), self.settings.observe_s,
                                   self.rate_window_s, self.down())
        self.book.measure(self.readings)
        return due

    def down(self) -> frozenset[str]:
        """Pools with an instance whose server is down (its last telemetry: not ready; or
        unreachable at the last read): a change is the cadence's outage, a re-plan at once,
        which replaces the instance, not at the next scheduled plan."""
        out = set()
        for pool in self.pools:
            for inst in self.actor.provider.instances(pool):
                st = self.fleet.backends.get(inst.id)
                if inst.id in self.actor.unreachable or (
                        st is not None and st.last is not None and not st.last.ready):
                    out.add(pool)
        return frozenset(out)

    def demand(self, horizon_s: float | None = None) -> tuple[DemandClass, ...]:
        """What a plan made now is solved for (:meth:`Cadence.demand`)."""
        s = self.cadence.settings
        return self.cadence.demand(self.wall(), s.horizon_s if horizon_s is None else horizon_s)

    def problem(self, horizon_s: float | None = None) -> Problem:
        names = sorted({v for p in self.pools.values() for v in p.variants})
        variants = []
        declared = {v.name: v for v in self.settings.variants}
        for name in names:
            v = self.catalog.variant(name)
            assert v is not None  # checked against the models by the config validator
            spec = declared.get(name)
            compute = (self.measured_compute_ms(name)
                       or (spec.compute_ms if spec is not None and spec.compute_ms else None)
                       or (self.catalog.model(v.logical).default_slo_ms
                           * PRIOR_COMPUTE_FRACTION_OF_SLO))
            variants.append(PlanVariant(name, v.logical, v.quality,
                                        self.book.footprint_gb(name), compute))
        return Problem(tuple(self.pools.values()), tuple(variants), self.demand(horizon_s),
                       self.catalog.rtt, PlannerSettings(
                           memory_headroom=self.settings.memory_headroom,
                           survive_region_loss=self.settings.survive_region_loss,
                           time_limit_s=self.settings.solve_time_limit_s,
                           carry_what_fits=self.settings.carry_what_fits))

    def measured_compute_ms(self, variant: str) -> float | None:
        """``variant``'s compute on a speed-1 GPU as the loop's own instances measured it
        (Triton's statistics × the pool's speed, mean over instances); None before any."""
        samples = []
        for pid, iids in self.state.instances.items():
            for iid in iids:
                st = self.fleet.backends.get(iid)
                load = st.loads.get(variant) if st is not None else None
                if load is not None and load.compute_ms is not None:
                    samples.append(load.compute_ms * self.pools[pid].speed)
        return sum(samples) / len(samples) if samples else None

    # -- the placement as it is ------------------------------------------------------------
    async def refresh(self) -> Plan:
        """Read the current placement from the servers (a pool's GPUs share one variant set:
        the union of what its instances loaded and the gate routes; an instance whose server
        does not answer is no GPU: :meth:`CapacityActor.placement`)."""
        placed = await self.actor.placement(sorted(self.pools))
        pools = []
        self.state.instances = {p: [i.id for i, _ in insts] for p, insts in placed.items()}
        for pid, insts in placed.items():
            if not insts:
                continue
            loaded = frozenset().union(*(v for _, v in insts))
            usd = self.pools[pid].usd_per_gpu_hour * len(insts)
            pools.append(PoolPlan(pid, len(insts), tuple(sorted(loaded)), 0.0, 0.0, usd, ()))
        pools.sort(key=lambda p: p.usd_per_hour)
        self.state.current = Plan(tuple(pools), sum(p.usd_per_hour for p in pools))
        return self.state.current

    # -- re-plan ---------------------------------------------------------------------------
    async def replan(self, trigger: str | Due) -> Proposal | None:
        """Solve (a full plan, or a right-sizing when ``trigger`` is one), decide with
        hysteresis, then apply (auto) or hold for approval. A string: a full plan."""
        s = self.cadence.settings
        due = (trigger if isinstance(trigger, Due)
               else Due("operator", trigger, s.event_horizon_s))
        trigger = due.reason
        async with self._lock:
            current = await self.refresh()
            problem = self.problem(due.horizon_s)
            # The solver is CPU-bound (HiGHS releases the GIL): keep the event loop serving.
            decision = await asyncio.to_thread(revise, problem, current, self.churn,
                                               due.resize)
            self.cadence.solved(self.wall(), problem.demand,
                                None if isinstance(decision, Infeasible) else decision.plan)
            if isinstance(decision, Infeasible):
                self.state.reason = f"{trigger}: {decision.explain()}" + self._unreachable()
                audit.warning("capacity.infeasible", trigger=trigger,
                              constraint=decision.constraint, detail=decision.detail)
                return None
            old = self.state.proposal
            same = (self.state.pending and old is not None
                    and self.target(old.decision.plan) == self.target(decision.plan))
            # the same target keeps its id: an operator approving it is not refused
            proposal = Proposal(old.id if same and old is not None else uuid.uuid4().hex[:12],
                                decision, problem, self.wall())
            carried = decision.plan.carried_note()
            self.state.reason = f"{trigger}: {decision.reason}" + (
                f"; {carried}" if carried else "") + self._unreachable()
            if not decision.adopt:
                self.state.proposal, self.state.pending = proposal, False
                log.info("capacity.kept", trigger=trigger, reason=decision.reason)
                return proposal
            self.state.proposal = proposal
            audit.info("capacity.proposed", plan_id=proposal.id, trigger=trigger,
                       reason=decision.reason, apply=self.settings.apply,
                       usd_per_hour_before=round(current.usd_per_hour, 4),
                       usd_per_hour_after=round(decision.plan.usd_per_hour, 4),
                       target=_target_json(self.target(decision.plan)))
            if self.settings.apply == "auto":
                await self._apply(proposal, approved_by="auto")
            else:
                self.state.pending = True
            return proposal

    def _unreachable(self) -> str:
        """The instances the last read of the placement found dead (counted as no GPU; an
        applied plan removes them), for the plan's reason."""
        dead = self.actor.unreachable
        return ("; unreachable, serving nothing (replaced when a plan is applied): "
                + ", ".join(f"{i} ({why})" for i, why in sorted(dead.items()))) if dead else ""

    def target(self, plan: Plan) -> dict[str, PoolTarget]:
        """Every configured pool, those the plan leaves out at zero GPUs."""
        gpus, loaded = plan.gpus(), plan.loaded()
        return {p: PoolTarget(gpus.get(p, 0), loaded.get(p, frozenset())) for p in self.pools}

    async def approve(self, plan_id: str, who: str) -> list[tuple[str, str, str]]:
        """Apply the pending plan named ``plan_id`` (raises :class:`NotPending`)."""
        async with self._lock:
            proposal = self.state.proposal
            if not self.state.pending or proposal is None or proposal.id != plan_id:
                have = proposal.id if proposal is not None and self.state.pending else "none"
                raise NotPending(f"plan {plan_id!r} is not pending (pending: {have}); run "
                                 "`switchyard plan` to see the current proposal")
            audit.info("capacity.approved", plan_id=plan_id, identity=who)
            return await self._apply(proposal, approved_by=who)

    async def _apply(self, proposal: Proposal, approved_by: str) -> list[tuple[str, str, str]]:
        self.state.pending = False
        target = self.target(proposal.decision.plan)
        try:
            report = await self.actor.apply(target)
        except ApplyFailed as exc:
            self.state.last_error = exc.message
            for verb, iid, variant in exc.report.actions:
                audit.info("capacity.changed", plan_id=proposal.id, action=verb,
                           instance=iid, variant=variant, approved_by=approved_by)
            audit.error("capacity.apply_failed", plan_id=proposal.id, step=list(exc.step),
                        error=str(exc.cause), applied=[list(a) for a in exc.report.actions],
                        approved_by=approved_by)
            await self.refresh()
            raise
        for verb, iid, variant in report.actions:
            audit.info("capacity.changed", plan_id=proposal.id, action=verb, instance=iid,
                       variant=variant, approved_by=approved_by)
        self.state.last_error = ""
        await self.refresh()
        audit.info("capacity.applied", plan_id=proposal.id, steps=len(report.actions),
                   usd_per_hour=round(self.state.current.usd_per_hour, 4),
                   approved_by=approved_by)
        return report.actions

    # -- the schedule ----------------------------------------------------------------------
    async def step(self) -> None:
        if self.telemetry is not None:
            await self.telemetry.poll()
        due = self.observe()
        if due is not None:
            with contextlib.suppress(ApplyFailed):  # audited; the next due re-plan retries
                await self.replan(due)

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop outlives one bad round; the log says why
                log.exception("capacity.round_failed")
            await asyncio.sleep(self.settings.observe_s)

    def forget_leftovers(self) -> list[str]:
        """Forget managed instances this loop's provider does not run (a previous placement's,
        restored from learned state: their servers went with it). Left in the fleet they were
        routed to, and their restored call rates read as demand for their variants' quality
        (a new run's first plan loaded the large variant with no call asking for it)."""
        ours = {i.id for p in self.pools for i in self.actor.provider.instances(p)}
        gone = sorted(b for b in self.fleet.backends if b not in ours
                      and any(is_instance_id(p, b) for p in self.pools))
        for b in gone:
            self.fleet.deregister(b)
            for dep in [d for d in self.fleet.use if d.startswith(f"{b}/")]:
                del self.fleet.use[dep]
        if gone:
            log.info("capacity.forgot_leftovers", backends=gone)
            self._publish()
        return gone

    def start(self) -> None:
        self.forget_leftovers()
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.telemetry is not None:
            await self.telemetry.close()
        await self.actor.close()
        if self._on_stop is not None:
            await self._on_stop()


def _target_json(target: Mapping[str, PoolTarget]) -> dict[str, object]:
    return {p: {"gpus": t.gpus, "variants": sorted(t.variants)} for p, t in sorted(target.items())}
