"""A/B check of the brain: switchyard alone on every scenario, several seeds, brain variants.

    python -m benchmarks.cost_check [--scenarios NAME ...] [--seeds 0 1] [--variants base ...]

For deciding whether a change to the brain lands (issue 11's rule: no scenario's attainment
worse by more than 0.1 point, the objective better overall), without the other policies,
the bounds and the sweep of ``python -m benchmarks.cost --all-scenarios``. Quick horizon
by default. Seed 0 is the scenario's own trace (the one RESULTS.md reports); seed ``n`` adds ``n``
to it (another trace and other draws of the same scenario). A variant is the brain as
committed with one rule switched (``VARIANTS``: idle-only decay of miss margins,
per-deployment tail margins, a learned or another fixed tail factor for deployments no edge
has measured, a miss budget for the margins, borrowing idle slots: ``placement/filters/slo.py``
and ``placement/shares.py``; ``unmeasured-1.3`` is the brain before 1.5; an unmeasured row as
a probe, ``probe-*``, ``placement/filters/slo.py``; a headroom per SLO class,
``class-headroom*``, ``placement/feedback.py``; the fallback before it chose by each row's
chance of meeting the SLO, ``fallback-fastest``, ``placement/meet.py``; the fallback without
the rows whose own recent miss rate is too high, ``exclude-*``, ``placement/feedback.py``;
the simulator before it ran the edge's slow start, ``no-slow-start``; a deployment's compute
from the same variant on the same accelerator elsewhere, and a row nobody has observed
widened by its mean's uncertainty, ``prior-*``, ``placement/prior.py``; loose calls off
rows near capacity, ``hot-rows*``, ``placement/hot_rows.py``), applied inside a
worker process of its own (a fresh one per run: until the borrowing round a pool worker ran
several checks, so a variant's switch could leak into the next check it ran, ``base``
included); ``base`` is the brain as committed. Prints one row per (scenario, seed, variant):
attainment, USD per 1M calls, switchyard's misses by cause (``benchmarks/costsim/misses.py``),
how many of them came in the first 5 simulated seconds, and the share of the expected cost
paid above each call's cheapest LP-feasible deployment (``premiums``); ``--detail N`` also
prints where that premium went and, per choice, which soft filter kept the cheapest cheaper
row out (``WhyNot``). ``--full``: the scenarios' full horizon. Not written into RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.common import md_table, progress
from benchmarks.cost import SCENARIOS
from benchmarks.costsim import control, policies, suite
from benchmarks.costsim.engine import SimResult
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes, classify, unobserved_parts
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import generate, outage_windows
from placement import (
    attempts,
    feedback,
    hot_rows,
    latency,
    meet,
    model,
    pipeline,
    queueing,
    reserve,
    routes,
    shares,
)
from placement.feedback import SloFeedback
from placement.filters import slo
from placement.framework import Filter
from placement.model import CallContext, Candidate
from placement.pipeline import Decision
from placement.registry import build_profile
from placement.tail_margins import TailMargins

EARLY_S = 5.0


def _idle_decay() -> None:
    """Margins decay in time only while their deployment gets no calls of the class."""
    policies.SloFeedback = functools.partial(  # type: ignore[misc]
        SloFeedback, idle_s=feedback.IDLE_S)


def _tail_track(tail: float) -> Callable[[], None]:
    """Idle decay plus per-deployment tail margins (``placement.tail_margins``) at ``tail``."""
    def apply() -> None:
        def make() -> SloFeedback:
            return SloFeedback(idle_s=feedback.IDLE_S, tails=TailMargins(tail=tail))
        policies.SloFeedback = make  # type: ignore[misc,assignment]
    return apply


def _learned_tail(default: float) -> Callable[[], None]:
    """Tables with ``TableSettings.learned_tail`` on, ``default`` before anything is measured."""
    def apply() -> None:
        control.TableSettings = functools.partial(  # type: ignore[misc]
            routes.TableSettings, learned_tail=True)
        latency.tail_factor.__defaults__ = (default, 0.5)
    return apply


def _unmeasured_factor(factor: float) -> Callable[[], None]:
    """Tables price every deployment no edge has measured at ``factor`` × its mean compute
    (not ``latency.UNMEASURED_TAIL_FACTOR``); measured ones keep their observed p95."""
    def apply() -> None:
        control.TableSettings = functools.partial(  # type: ignore[misc]
            routes.TableSettings, learned_tail=True)
        routes.RouteBuilder.tail_factor = lambda self, model, now: factor  # type: ignore
    return apply


def _budget() -> None:
    """Margins track the fraction of misses the edge's own miss rate leaves room for
    (``SloFeedback(budget=True)``, ``feedback.budgeted_tail``)."""
    policies.SloFeedback = functools.partial(SloFeedback, budget=True)  # type: ignore[misc]


def _borrow_idle() -> None:
    """Tables with ``TableSettings.borrow_idle``: an edge's slots also hold its share of the
    backend's idle ones (``routes.borrowable``)."""
    control.TableSettings = functools.partial(  # type: ignore[misc]
        routes.TableSettings, borrow_idle=True)


def _borrow_loose() -> None:
    """The SLO filter plans a borrowed idle slot as one call's wait (``slo.borrowed_ms``):
    only calls with that much slack borrow."""
    slo.BORROW_IDLE = True


def _borrow_mmc() -> None:
    """``borrow-loose`` with the M/M/c wait at the attainment tail (``queueing.wait_ms``) at
    the backend's reported utilisation plus this edge's excess, not one call's."""
    slo.BORROW_IDLE = True
    slo.BORROW_WAIT = "mmc"


def _borrow_surplus(wait: str, z: float = feedback.BUDGET_Z) -> Callable[[], None]:
    """``borrow-loose`` (``wait``: ``one-call`` or ``mmc``) only while the edge's own miss
    rate is below the target with confidence (``SloFeedback.surplus``; bounds at ``z``)."""
    def apply() -> None:
        feedback.miss_bounds.__defaults__ = (z,)
        slo.BORROW_WAIT = wait
        choose = policies.ProfilePolicy.choose

        def gated(self: policies.ProfilePolicy, a: policies.Attempt) -> str | None:
            slo.BORROW_IDLE = self._feedback(a.edge).surplus()
            return choose(self, a)
        policies.ProfilePolicy.choose = gated  # type: ignore[method-assign]
    return apply


def _borrow(z: float = shares.BORROW_Z, fixed: float | None = None,
            no_wait: bool = False) -> Callable[[], None]:
    """Idle-slot borrowing as the edge would run it (``shares.BORROW``): the miss budget
    the edge's own misses leave (upper bound at ``z``) as ``CallContext.borrow_tail``, the
    borrowed slot priced at the M/M/c wait of that tail (``shares.borrowed_ms``); with
    ``fixed``, that tail for every call, whatever the edge missed (no feedback); with
    ``no_wait``, only where at most that fraction of calls would wait at all."""
    def apply() -> None:
        shares.BORROW = True
        shares.BORROW_Z = z
        shares.BORROW_NO_WAIT = no_wait
        if fixed is not None:
            shares.borrow_tail = lambda fb, tail=queueing.TAIL: fixed  # type: ignore
    return apply


def _no_borrow() -> None:
    """The brain before idle-slot borrowing (``shares.BORROW`` off)."""
    shares.BORROW = False


def _probe(slack: float, own: bool = False) -> Callable[[], None]:
    """An unmeasured deployment takes only calls with ``slack`` × the room its modelled
    queue and service need (``slo.probe_ms``); ``own``: unmeasured by this edge."""
    def apply() -> None:
        slo.PROBE_SLACK = slack
        slo.PROBE_OWN = own
    return apply


def _class_headroom(step: float, low: float = 0.0, target: float = feedback.CLASS_TARGET
                    ) -> Callable[[], None]:
    """A margin per SLO class learned from the class's misses on any deployment
    (``SloFeedback(class_step=...)``), at least ``low`` × SLO, tracking ``target`` ×
    the tail."""
    def apply() -> None:
        feedback.CLASS_STEP = step
        feedback.CLASS_RANGE = (low, feedback.CLASS_RANGE[1])
        feedback.CLASS_TARGET = target
    return apply


def _fallback_idle_fit() -> None:
    """The fallback takes the fastest row that would meet the SLO with a free slot first
    (``pipeline.FALLBACK_IDLE_FIT``)."""
    pipeline.FALLBACK_IDLE_FIT = True


def _fallback_chance(idle_first: bool = False) -> Callable[[], None]:
    """The fallback by each row's chance of meeting the call's SLO (``placement.meet``,
    ``pipeline.FALLBACK_CHANCE``); ``idle_first``: only among rows whose p95 with a free
    slot fits the SLO when any does (``meet.IDLE_FIRST``)."""
    def apply() -> None:
        pipeline.FALLBACK_CHANCE = True
        meet.IDLE_FIRST = idle_first
    return apply


def _meet(eps: float = meet.EPS, symmetric: bool = False,
          learned_cap: float | None = None, unlearned_second: bool = False
          ) -> Callable[[], None]:
    """The chance fallback drawing among the rows within ``eps`` of the best chance
    (``meet.EPS``); ``symmetric``: every edge assumed past its share of a backend as this
    one is (``meet.SYMMETRIC_EXCESS``); ``learned_cap``: a learned margin takes at most
    that × SLO off the budget (``meet.LEARNED_CAP``); ``unlearned_second``: when no row
    has any chance, by the chance without learned margins (``meet.UNLEARNED_SECOND``)."""
    def apply() -> None:
        meet.EPS = eps
        meet.SYMMETRIC_EXCESS = symmetric
        meet.LEARNED_CAP = learned_cap
        meet.UNLEARNED_SECOND = unlearned_second
    return apply


def _exclude(rate: float, learned_cap: float | None = None,
             unlearned_second: bool = False) -> Callable[[], None]:
    """The fallback without the rows whose recent miss rate for the call's class is above
    ``rate`` with confidence (``feedback.EXCLUDE_RATE``), its chance with learned margins
    at most ``learned_cap`` × SLO (``meet.LEARNED_CAP``); ``unlearned_second``: with no
    chance anywhere, by the chance without margins (``meet.UNLEARNED_SECOND``)."""
    def apply() -> None:
        feedback.EXCLUDE_RATE = rate
        meet.LEARNED_CAP = learned_cap
        meet.UNLEARNED_SECOND = unlearned_second
    return apply


def _prior(pool: bool, z: float = 0.0) -> Callable[[], None]:
    """A deployment's compute pulled towards the same variant on the same accelerator
    elsewhere in the fleet (``routes.FLEET_PRIOR``, ``placement.prior``); ``z`` > 0: a row
    nobody has observed widened by the uncertainty left in its mean (``routes.PRIOR_Z``)."""
    def apply() -> None:
        routes.FLEET_PRIOR = pool
        routes.PRIOR_Z = z
    return apply


def _mix_queue() -> None:
    """A backend's modelled queue at the mean service time of its every variant's calls
    (``routes.MIX_QUEUE``)."""
    routes.MIX_QUEUE = True


def _mix_wait(on: bool, at_least_own: bool = True, strict: bool = True,
              symmetric: bool = False) -> Callable[[], None]:
    """Rows with their backend's mix (``routes.MIX_WAIT``): the edge's per-call wait at the
    mean service time of the calls ahead (``Candidate.ahead_ms``); ``at_least_own``: only
    where it is longer than the row's own compute (``routes.MIX_AT_LEAST_OWN``); ``strict``
    False: the fallback's wait only, not the strict test's worst case
    (``model.WORST_CASE_AT_MIX``); ``symmetric``: the fallback also takes every other edge
    past its share of a backend as this one is (``meet.SYMMETRIC_EXCESS``)."""
    def apply() -> None:
        routes.MIX_WAIT = on
        routes.MIX_AT_LEAST_OWN = at_least_own
        model.WORST_CASE_AT_MIX = strict
        meet.SYMMETRIC_EXCESS = symmetric
    return apply


def _spread(kind: str, mix: bool = False) -> Callable[[], None]:
    """The fallback spread against its herd (``meet.SPREAD``: "room" by each row's chance ×
    this edge's slice of its room, "p2c" the likelier of two rows drawn by slots); ``mix``:
    with ``mix-wait`` (``routes.MIX_WAIT``)."""
    def apply() -> None:
        meet.SPREAD = kind
        if mix:
            _mix_wait(True)()
    return apply


def _no_slow_start() -> None:
    """The simulator before it ran the edge's slow start (``policies.SLOW_START`` off)."""
    policies.SLOW_START = False


def _fallback_fastest() -> None:
    """The fallback before ``placement.meet``: the fastest row by the strict test's estimate
    (``pipeline.FALLBACK_CHANCE`` off)."""
    pipeline.FALLBACK_CHANCE = False


def _reserve(factor: float = 1.0, need: int = 2, cap: float = 0.5,
             fallback_only: bool = False) -> Callable[[], None]:
    """Room on a row held back for tighter SLO classes with no other row
    (``placement.reserve``): ``factor`` × the slots their needs occupy, needs counted for
    calls whose idle-fitting rows are on at most ``need`` backends, at most ``cap`` × the
    edge's slot share; ``fallback_only``: needs only from calls that fell back."""
    def apply() -> None:
        reserve.ON, reserve.FACTOR, reserve.NEED_BACKENDS, reserve.CAP = True, factor, need, cap
        reserve.FALLBACK_ONLY = fallback_only
    return apply


def _margin_cap(cap: float | None) -> Callable[[], None]:
    """The margins learned from misses grow to at most ``cap`` × SLO
    (``feedback.MAX_MARGIN``; None: without bound)."""
    def apply() -> None:
        feedback.MAX_MARGIN = cap
    return apply


def _attempts(last_leaves: bool, at_once: bool = False) -> Callable[[], None]:
    """The attempt policy's failure domains (``placement.attempts``): ``last_leaves`` off is
    the rule of 9eafa5a (before the last attempt only one failed cloud is avoided);
    ``at_once``: every server failure marks its region."""
    def apply() -> None:
        attempts.LAST_LEAVES_FAILED_REGIONS = last_leaves
        attempts.SERVER_FAILURE_MARKS_REGION = at_once
    return apply


def _hot_rows(on: bool, hot: float = 0.9, loose: float = 4.0, margin: bool = True,
              price: float | None = None, measured: str = "") -> Callable[[], None]:
    """Loose calls off hot rows (``placement.hot_rows``): among the rows that pass, a call
    keeps off a backend at least ``hot`` busy while a cooler row it meets with ``loose`` ×
    room passes (``margin``: its estimate with the margin learned there; ``price``: a cool
    row at most that × the cheapest row that passed; ``measured``: a cool row only once
    measured, "fleet" by any edge, "own" by this one); ``on`` False: the brain without it."""
    def apply() -> None:
        hot_rows.ON, hot_rows.HOT, hot_rows.LOOSE = on, hot, loose
        hot_rows.WITH_MARGIN, hot_rows.MAX_PRICE = margin, price
        hot_rows.MEASURED = measured
    return apply


def _fallback_ignores_avoid() -> None:
    """The fallback over every healthy row, the call's failure domains not kept to
    (``pipeline.FALLBACK_AVOIDS`` off: the brain before it)."""
    pipeline.FALLBACK_AVOIDS = False


VARIANTS: dict[str, Callable[[], None]] = {
    "hot-rows": _hot_rows(True),
    "hot-rows-0.8": _hot_rows(True, hot=0.8),
    "hot-rows-0.95": _hot_rows(True, hot=0.95),
    "hot-rows-loose-3": _hot_rows(True, loose=3.0),
    "hot-rows-no-margin": _hot_rows(True, margin=False),
    "hot-rows-price-1.5": _hot_rows(True, price=1.5),
    "hot-rows-price-2": _hot_rows(True, price=2.0),
    "hot-rows-price-3": _hot_rows(True, price=3.0),
    "hot-rows-price-4": _hot_rows(True, price=4.0),
    "hot-rows-price-2-measured": _hot_rows(True, price=2.0, measured="fleet"),
    "hot-rows-price-2-own": _hot_rows(True, price=2.0, measured="own"),
    "hot-rows-own": _hot_rows(True, measured="own"),
    "no-hot-rows": _hot_rows(False),
    "fallback-ignores-avoid": _fallback_ignores_avoid,
    "margin-cap-1": _margin_cap(1.0),
    "margin-unbounded": _margin_cap(None),
    "attempts-9eafa5a": _attempts(False),
    "attempts-region-at-once": _attempts(True, at_once=True),
    "reserve": _reserve(),
    "reserve-2": _reserve(2.0),
    "reserve-need-1": _reserve(need=1),
    "reserve-cap-1": _reserve(2.0, cap=1.0),
    "reserve-fallback": _reserve(fallback_only=True),
    "reserve-fallback-4": _reserve(4.0, need=8, cap=1.0, fallback_only=True),
    "prior-pool": _prior(True),
    "prior-pool-z1.65": _prior(True, 1.645),
    "prior-z1.65": _prior(False, 1.645),
    "mix-queue": _mix_queue,
    "mix-wait": _mix_wait(True),
    "mix-wait-mean": _mix_wait(True, at_least_own=False),
    "mix-wait-symmetric": _mix_wait(True, symmetric=True),
    "mix-wait-fallback": _mix_wait(True, strict=False),
    "mix-wait-fallback-mean": _mix_wait(True, at_least_own=False, strict=False),
    "spread-room": _spread("room"),
    "spread-p2c": _spread("p2c"),
    "spread-hrw": _spread("hrw"),
    "mix-wait-spread-hrw": _spread("hrw", mix=True),
    "mix-wait-spread-room": _spread("room", mix=True),
    "mix-wait-spread-p2c": _spread("p2c", mix=True),
    "fallback-fastest": _fallback_fastest,
    "fallback-chance": _fallback_chance(),
    "fallback-chance-idle-first": _fallback_chance(idle_first=True),
    "fallback-idle-fit": _fallback_idle_fit,
    "meet-eps-0": _meet(0.0),
    "meet-eps-0.01": _meet(0.01),
    "meet-eps-0.02": _meet(0.02),
    "meet-eps-0.1": _meet(0.1),
    "meet-symmetric": _meet(symmetric=True),
    "meet-learned-0": _meet(learned_cap=0.0),
    "meet-learned-0.25": _meet(learned_cap=0.25),
    "meet-unlearned-second": _meet(unlearned_second=True),
    "exclude-0.05": _exclude(0.05),
    "exclude-0.05-cap-0.25": _exclude(0.05, 0.25),
    "exclude-0.02-cap-0.25": _exclude(0.02, 0.25),
    "exclude-tail-cap-0.25": _exclude(queueing.TAIL, 0.25),
    "exclude-0.05-cap-0": _exclude(0.05, 0.0),
    "exclude-0.05-unlearned-second": _exclude(0.05, unlearned_second=True),
    "probe-2": _probe(2.0),
    "probe-1.5": _probe(1.5),
    "probe-own-1.5": _probe(1.5, own=True),
    "class-headroom": _class_headroom(0.02),
    "class-headroom-spend": _class_headroom(0.02, low=-0.1),
    "no-borrow": _no_borrow,
    "borrow": _borrow(),
    "borrow-z1": _borrow(1.0),
    "borrow-no-wait": _borrow(no_wait=True),
    "borrow-fixed-0.0005": _borrow(fixed=0.0005),
    "borrow-fixed-0.002": _borrow(fixed=0.002),
    "borrow-surplus": _borrow_surplus("one-call"),
    "borrow-mmc-surplus": _borrow_surplus("mmc"),
    "borrow-surplus-z1.28": _borrow_surplus("one-call", 1.28),
    "borrow-mmc": _borrow_mmc,
    "borrow-loose": _borrow_loose,
    "borrow-idle": _borrow_idle,
    "base": lambda: None,
    "no-slow-start": _no_slow_start,
    "budget": _budget,
    "idle-decay": _idle_decay,
    "tail-track": _tail_track(queueing.TAIL),
    "learned-tail": _learned_tail(latency.DEFAULT_TAIL_FACTOR),
    "learned-tail-1.65": _learned_tail(1.65),
    "unmeasured-1.3": _unmeasured_factor(1.3),
    "unmeasured-1.65": _unmeasured_factor(1.65),
}


@dataclass(frozen=True)
class Check:
    path: str
    seed: int
    variant: str
    detail: int = 0  # with > 0: the most common (cause, edge, SLO, deployment) of the misses
    quick: bool = True  # False: the scenario's full horizon (``--full``)


@dataclass(frozen=True)
class Row:
    scenario: str
    seed: int
    variant: str
    calls: int
    attainment: float
    usd_per_million: float
    misses: dict[str, int]
    early: int
    cpu_s: float
    top: list[tuple[str, int]]
    premium: float = 0.0  # of the expected cost, paid above each call's cheapest feasible
    spend: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    why: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    # the 'estimate before first samples' misses by table row and what made them late
    unobserved: dict[str, int] = dataclasses.field(default_factory=dict)


def premiums(sim: TracedSimulation, r: SimResult) -> tuple[float, Counter[str]]:
    """Where the money goes: per served call, what its deployment's expected cost (price ×
    mean service) exceeds that of the cheapest deployment that was up at its arrival, meets
    its quality floor and has ``rtt + mean service <= SLO`` (the fluid LP's feasibility;
    queueing ignored, so this is an upper bound of what routing could save). Returns the
    premium as a share of the expected cost, and USD per (SLO class, chosen deployment)."""
    s, trace = sim.s, sim.trace
    catalog, classes, deps = s.catalog(), s.classes(), sim.deps
    windows = outage_windows(s, trace.duration_s)
    cost = np.array([d.usd_per_s * d.mean_service_s for d in deps])
    feasible: dict[tuple[int, int], list[int]] = {}
    for ei, e in enumerate(trace.regions):
        for ki, k in enumerate(classes):
            feasible[(ei, ki)] = sorted(
                (i for i, d in enumerate(deps)
                 if s.variant(d.variant).model == k.model
                 and s.variant(d.variant).quality >= k.min_quality
                 and catalog.rtt(e, d.region) + d.mean_service_s * 1000 <= k.slo_ms),
                key=lambda i: cost[i])
    out: Counter[str] = Counter()
    total = paid = 0.0
    for i in np.nonzero(r.final_dep >= 0)[0]:
        dep = int(r.final_dep[i])
        t, ki = float(trace.t[i]), int(trace.klass[i])
        down = {p for w in windows if w.start_s <= t < w.end_s for p in w.pools}
        cheapest = next((cost[j] for j in feasible[(int(trace.region[i]), ki)]
                         if deps[j].backend_id not in down), cost[dep])
        paid += cost[dep]
        extra = max(0.0, cost[dep] - cheapest)
        total += extra
        if extra > 0:
            k = classes[ki]
            out[f"{k.model} slo {k.slo_ms:g} q>={k.min_quality:g} -> {deps[dep].id}"] += extra
    return (total / paid if paid else 0.0), out


def _why_not(c: Candidate, ctx: CallContext, filters: list[Filter]) -> str | None:
    """The first soft filter that kept ``c`` out, and on what (None: a hard filter did,
    or nothing did)."""
    if any(f.hard and f.reject(c, ctx) is not None for f in filters):
        return None
    for f in filters:
        if f.reject(c, ctx) is None:
            continue
        if f.name != "slo":
            return f.name
        own = ctx.observed_p95_ms.get(c.deployment_id)
        base = own if own is not None else c.latency_p95_ms
        if ctx.latency_ms(c) > base + 1e-6:
            return "slo: past the edge's slot share (worst-case wait)"
        if ctx.slo_margins.get(c.deployment_id, 0.0) > 0:
            return "slo: margin learned from misses"
        return "slo: the edge's observed p95" if own is not None else "slo: the table's p95"
    return None


class WhyNot:
    """A decision hook: for each choice, the cheapest row cheaper than the one chosen that a
    soft filter kept out, and the price difference, by (SLO, reason)."""

    def __init__(self, s: Scenario) -> None:
        self.filters = list(build_profile("cheapest", s.settings.spread_band).filters)
        self.usd: Counter[str] = Counter()

    def __call__(self, cands: list[Candidate], ctx: CallContext, decision: Decision) -> None:
        chosen = decision.candidate
        for c in cands:
            if c.dropped_reason or c.cost_usd >= chosen.cost_usd * 0.999:
                continue
            reason = _why_not(c, ctx, self.filters)
            if reason is not None:
                self.usd[f"slo {ctx.hints.slo_ms:g} | {reason}"] += chosen.cost_usd - c.cost_usd
                return


def run_one(c: Check) -> Row:
    VARIANTS[c.variant]()
    s = suite.scenario_of(suite.Job(c.path, c.quick, "switchyard"))
    s.seed += c.seed
    trace = generate(s, c.quick)
    why = WhyNot(s) if c.detail else None
    sim = TracedSimulation(s, trace, make_policy("switchyard", s, on_decision=why))
    r = sim.run()
    missed = ~(r.latency_ms <= r.slo_ms)
    early = int(np.sum(missed & (trace.t < EARLY_S)))
    top: list[tuple[str, int]] = []
    if c.detail:
        groups: Counter[str] = Counter()
        for i, cause in causes(sim, r).items():
            dep = r.deployments[r.final_dep[i]] if r.final_dep[i] >= 0 else "-"
            tenth = int(10 * trace.t[i] / trace.duration_s)
            groups[f"{cause} | {trace.regions[trace.region[i]]} | slo {r.slo_ms[i]:g} | "
                   f"{dep} | tenth {tenth}"] += 1
        top = groups.most_common(c.detail)
    premium, spend = premiums(sim, r)
    total = sum(spend.values()) or 1.0
    held = sum(why.usd.values()) if why else 0.0
    return Row(s.name, c.seed, c.variant, r.calls, r.attainment, r.cost_per_million(),
               dict(classify(sim, r)), early, r.wall_s, top, premium,
               [(k, v / total) for k, v in spend.most_common(c.detail)],
               [(k, v / held) for k, v in why.usd.most_common(c.detail)] if why and held
               else [], dict(unobserved_parts(sim, r)))


def _progress(r: Row) -> None:
    progress(f"cost_check: {r.scenario} seed {r.seed} {r.variant}: {r.attainment:.2%}, "
             f"{r.usd_per_million:.3g} USD/1M, {sum(r.misses.values())} misses "
             f"{r.misses}, {r.cpu_s:.0f} s CPU")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=None, help="file stems (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--variants", nargs="*", default=["base"], choices=sorted(VARIANTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--detail", type=int, default=0,
                   help="also print the N most common (cause, edge, SLO, deployment, tenth "
                        "of the day) of each run's misses")
    p.add_argument("--full", action="store_true",
                   help="the scenarios' full horizon (5x the quick one's calls)")
    args = p.parse_args()
    paths = sorted(SCENARIOS.glob("*.toml"))
    if args.scenarios:  # in the order given
        paths = [SCENARIOS / f"{name}.toml" for name in args.scenarios]
    checks = [Check(str(q), seed, v, args.detail, not args.full) for q in paths
              for seed in args.seeds
              for v in args.variants]
    t0 = time.monotonic()
    rows: list[Row] = []
    # A variant switches module state in the process that runs it: every run gets a fresh
    # process (maxtasksperchild=1), or one variant's switch would leak into the next run.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(args.workers, 1), maxtasksperchild=1) as pool:
        for row in pool.imap(run_one, checks):  # in order, each as soon as it is done
            rows.append(row)
            _progress(row)
    out = [[r.scenario, r.seed, r.variant, f"{r.attainment:.2%}", r.usd_per_million,
            sum(r.misses.values()), *[r.misses.get(k, 0) for k in CAUSES], r.early,
            f"{r.premium:.0%}", f"{r.cpu_s:.0f}"] for r in rows]
    print(md_table(("scenario", "seed", "variant", "attainment", "USD / 1M", "misses",
                    *CAUSES, f"misses t < {EARLY_S:g} s", "premium over cheapest feasible",
                    "CPU s"), out))
    parts = sorted({k for r in rows for k in r.unobserved})
    if parts:
        print("\n'estimate before first samples' by the table's row and what made the call "
              "late:\n")
        print(md_table(("scenario", "seed", "variant", *parts),
                       [[r.scenario, r.seed, r.variant, *[r.unobserved.get(k, 0) for k in parts]]
                        for r in rows]))
    for r in rows:
        if r.top:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}:")
            for key, n in r.top:
                print(f"  {n:4d}  {key}")
        if r.spend:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}: premium by (class, deployment), "
                  "share of the premium")
            for key, share in r.spend:
                print(f"  {share:4.0%}  {key}")
        if r.why:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}: why a cheaper row was not "
                  "taken (the cheapest one a soft filter kept out), share of the difference")
            for key, share in r.why:
                print(f"  {share:4.0%}  {key}")
    print(f"\n_(took {time.monotonic() - t0:.0f} s)_")


if __name__ == "__main__":
    main()
