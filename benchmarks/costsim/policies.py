"""The routing policies compared on one trace. All respect the hard constraints (health as
their own mechanism sees it, the call's quality floor); they differ in how they choose.

- ``switchyard``: placement's ``cheapest`` profile on placement's own tables, with the
  edge's observed p95s, calls in flight against its slot share and the margins it learned
  from its SLO misses (``placement.feedback``, one per edge as the router keeps) — the
  per-call ``Profile.choose`` the edge runs.
- ``switchyard-whole-slots``: the same without slot shares (edges report no call rates, so
  each edge counts its calls in flight against a deployment's whole concurrency): the
  ablation that shows what the shares are worth.
- ``lowest-latency``: the ``fastest`` profile, same tables and filters.
- ``cheapest-ignoring-slo``: the hard filters only, the cost scorer, best pick: always the
  cheapest healthy deployment by placement's estimate, whatever its latency or load.
- ``round-robin``: rotates over the healthy, quality-feasible rows of the table.
- ``litellm-cost``: LiteLLM's ``cost-based-routing`` with cooldowns (``litellm.py``).

The profile policies also run the edge's slow start (``placement.filters.slow_start``): a
row that comes back in the table (its ``dropped_reason`` cleared: the simulator's analogue
of the edge's health checks passing again) takes a share of this edge's calls rising over
``[edge] slow_start_s`` (``ramp_share``, the Python edge's rule), drawn with the call's
``draw``; ``SLOW_START`` off is the simulator before it (every returned row at once).
Measured (2026-11-27, ``python -m benchmarks.cost_check --seeds 0 1 --variants base
no-slow-start``, every scenario, quick): attainment within a run's noise (default
99.86/99.84 → 99.85/99.81 %, single-cloud-hetero 99.49/99.52 → 99.42/99.55 %, the rest
within 0.03 point), cost up where cheap pools come back: tight-three-variant 13.2/13.8 →
15.3/14.2 USD/1M, noisy-cheap-spot 4.43/4.39 → 4.66/4.62, small 4.10/5.50 → 4.67/5.84,
default 18.9/19.5 → 19.4/19.8 (the quick day compresses a day into minutes, so a 10 s ramp
covers a far larger part of it than on a real day). On, as the edge runs it.

Every policy gets the same attempt rules, the edge's own (``placement.attempts``): a failed
attempt (backend down, queue full) is retried on another deployment, excluding what the
failure rules out (every variant on a dead server) and steering away from failing regions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from benchmarks.costsim.control import ControlPlane
from benchmarks.costsim.scenario import CallClass
from placement import reserve, shares
from placement.errors import NoHealthyDeployment
from placement.feedback import SloFeedback
from placement.filters.slow_start import ramp_share
from placement.model import CallContext, Candidate, Hints
from placement.pickers.best import BestPicker
from placement.pipeline import Decision, Profile
from placement.registry import build_filters, build_profile
from placement.scorers.cost import CostScorer
from services.config import EdgeRuntimeConfig

SLOW_START = True
SLOW_START_S: float = EdgeRuntimeConfig.model_fields["slow_start_s"].default

HARD_FILTERS = ("routable", "ejected", "residency", "quality", "cost-cap")

# (candidates, context, decision) after every choice; tests audit decisions with it.
DecisionHook = Callable[[list[Candidate], CallContext, Decision], None]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the edge knows about the call when it (re)chooses."""

    edge: str
    klass: CallClass
    exclude: frozenset[str]  # read-only views of the call's ``CallAttempts``
    avoid_regions: frozenset[str]
    now: float


class Policy(Protocol):
    name: str
    control: ControlPlane | None  # None: the policy does not use placement's tables

    def choose(self, a: Attempt) -> str | None:
        """Deployment id (``backend/variant``) for this attempt, or None: nothing healthy."""
        ...

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        """Outcome of an attempt: ``status`` is ``ok``, ``unavailable`` or ``exhausted``."""
        ...


class Warming:
    """One edge's slow-start ramps (``ctx.warming``): a row that comes back in a table
    ramps from the moment this edge first sees the new table."""

    def __init__(self, ramp_s: float) -> None:
        self.ramp_s = ramp_s
        self._since: dict[str, float] = {}
        self._tables: dict[str, tuple[list[Candidate], frozenset[str]]] = {}
        self._shares: dict[str, float] = {}
        self._at = -1.0

    def seen(self, model: str, table: list[Candidate], now: float) -> None:
        """The table this edge routes ``model`` by at ``now``: its rows back from dropped
        start their ramp."""
        last = self._tables.get(model)
        if last is not None and last[0] is table:
            return
        down = frozenset(c.deployment_id for c in table if c.dropped_reason)
        if last is not None:
            for dep in last[1] - down:
                self._since[dep] = now
                self._at = -1.0
        self._tables[model] = (table, down)

    def shares(self, now: float) -> dict[str, float]:
        """Deployment -> its share of traffic at ``now`` (the rows still ramping)."""
        if now != self._at:
            self._at, self._shares = now, {}
            for dep, since in list(self._since.items()):
                share = ramp_share(now - since, self.ramp_s)
                if share is None:
                    del self._since[dep]
                else:
                    self._shares[dep] = share
        return self._shares


class ProfilePolicy:
    """A placement profile choosing from placement's tables, as the edge does per call."""

    def __init__(self, name: str, profile: Profile, control: ControlPlane, seed: int,
                 slo_margin_ms: float, on_decision: DecisionHook | None = None,
                 reserves: bool = False) -> None:
        self.name = name
        self.profile = profile
        self.control: ControlPlane | None = control
        self._control = control
        self.rng = random.Random(seed)
        self.slo_margin_ms = slo_margin_ms
        self.on_decision = on_decision
        self._hints: dict[CallClass, Hints] = {}
        self.fallbacks = 0
        # Calls each edge has in flight per deployment, as the edge's router counts them.
        self.inflight: dict[str, dict[str, int]] = {}
        # Each edge's margins learned from SLO misses (placement.feedback), as the router keeps.
        self.feedback: dict[str, SloFeedback] = {}
        self.warming: dict[str, Warming] = {}  # each edge's slow start
        # each edge's room held back for tighter SLO classes (placement.reserve), when on
        self.reserves: dict[str, reserve.Reserve] | None = {} if reserves else None
        # (model, edge) -> (the table, deployment id -> its p95), for _expected
        self._rows: dict[tuple[str, str], tuple[list[Candidate], dict[str, float]]] = {}

    def choose(self, a: Attempt) -> str | None:
        hints = self._hints.get(a.klass)
        if hints is None:
            hints = self._hints[a.klass] = Hints(slo_ms=a.klass.slo_ms,
                                                 min_quality=a.klass.min_quality)
        cands = self._control.tables[(a.klass.model, a.edge)]
        inflight = self.inflight.setdefault(a.edge, {})
        fb = self._feedback(a.edge)
        warming = self.warming.get(a.edge)
        if warming is None:
            warming = self.warming[a.edge] = Warming(SLOW_START_S if SLOW_START else 0.0)
        warming.seen(a.klass.model, cands, a.now)
        ctx = CallContext(hints, self.slo_margin_ms, a.exclude, a.avoid_regions,
                          observed_p95_ms=self._control.edges[a.edge].p95,
                          warming=warming.shares(a.now), inflight=inflight,
                          draw=self.rng.random(), slo_margins=fb.margins(hints.slo_ms, a.now),
                          borrow_tail=shares.borrow_tail(fb),
                          slo_excluded=fb.excluded(hints.slo_ms, a.now), edge=a.edge)
        try:
            held = None
            if self.reserves is not None:
                held = self.reserves.get(a.edge)
                if held is None:
                    held = self.reserves[a.edge] = reserve.Reserve()
            decision = self.profile.choose(cands, ctx, self.rng, reserve=held, now=a.now)
        except NoHealthyDeployment:
            return None
        if not decision.slo_met:
            self.fallbacks += 1
        if self.on_decision is not None:
            self.on_decision(cands, ctx, decision)
        dep = decision.candidate.deployment_id
        inflight[dep] = inflight.get(dep, 0) + 1
        return dep

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        inflight = self.inflight.get(a.edge, {})
        if inflight.get(deployment_id, 0) > 0:
            inflight[deployment_id] -= 1
        self._control.record(a.edge, deployment_id, latency_ms, status == "ok")
        if status == "ok":  # the attempt that served the call, against the call's SLO
            fb = self._feedback(a.edge)
            expected = self._expected(a, deployment_id)
            if expected is not None:
                fb.served(deployment_id, latency_ms, expected)
            fb.record(deployment_id, a.klass.slo_ms, latency_ms <= a.klass.slo_ms, now)

    def _expected(self, a: Attempt, deployment_id: str) -> float | None:
        """The p95 the edge expects of a deployment now: its own, else the table's row."""
        own = self._control.edges[a.edge].p95.get(deployment_id)
        if own is not None:
            return own
        table = self._control.tables.get((a.klass.model, a.edge), [])
        rows = self._rows.get((a.klass.model, a.edge))
        if rows is None or rows[0] is not table:
            rows = (table, {c.deployment_id: c.latency_p95_ms for c in table})
            self._rows[(a.klass.model, a.edge)] = rows
        return rows[1].get(deployment_id)

    def _feedback(self, edge: str) -> SloFeedback:
        fb = self.feedback.get(edge)
        if fb is None:
            fb = self.feedback[edge] = SloFeedback()
        return fb


def switchyard(control: ControlPlane, seed: int, band: float, margin_ms: float,
               on_decision: DecisionHook | None = None,
               name: str = "switchyard") -> ProfilePolicy:
    return ProfilePolicy(name, build_profile("cheapest", band), control, seed,
                         margin_ms, on_decision, reserves=reserve.ON)


def lowest_latency(control: ControlPlane, seed: int, margin_ms: float) -> ProfilePolicy:
    return ProfilePolicy("lowest-latency", build_profile("fastest"), control, seed, margin_ms)


def cheapest_ignoring_slo(control: ControlPlane, seed: int, margin_ms: float) -> ProfilePolicy:
    profile = Profile("cheapest-ignoring-slo",
                      build_filters(HARD_FILTERS, "cheapest-ignoring-slo.filters"),
                      [(CostScorer(), 1.0)], BestPicker())
    return ProfilePolicy("cheapest-ignoring-slo", profile, control, seed, margin_ms)


class RoundRobin:
    """Rotate over the table's healthy rows that meet the quality floor (per edge and model)."""

    name = "round-robin"

    def __init__(self, control: ControlPlane, margin_ms: float) -> None:
        self.control: ControlPlane | None = control
        self._control = control
        self.hard = build_filters(HARD_FILTERS, "round-robin.filters")
        self.margin_ms = margin_ms
        self.next: dict[tuple[str, CallClass], int] = {}

    def choose(self, a: Attempt) -> str | None:
        ctx = CallContext(Hints(a.klass.slo_ms, a.klass.min_quality), self.margin_ms,
                          a.exclude, a.avoid_regions)
        ok = [c for c in self._control.tables[(a.klass.model, a.edge)]
              if all(f.reject(c, ctx) is None for f in self.hard)]
        if not ok:
            return None
        key = (a.edge, a.klass)
        i = self.next.get(key, 0)
        self.next[key] = i + 1
        return ok[i % len(ok)].deployment_id

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        self._control.record(a.edge, deployment_id, latency_ms, status == "ok")
