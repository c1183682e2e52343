"""The brain variants ``benchmarks.cost_check`` runs: each name switches one rule of the brain
as committed (module state of ``placement`` or of the simulator's ``benchmarks.costsim``), in
the worker process that runs the check; ``base`` is the brain as committed. What each switch
does is in its function's docstring; what each measured is in ``benchmarks/RESULTS.md``,
the 'Cost:' subsections.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from benchmarks.costsim import control, policies
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
from placement.tail_margins import TailMargins


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
              price: float | None = None, measured: str = "", cool: float | None = None,
              slower: float | None = None, share: float | None = None
              ) -> Callable[[], None]:
    """Loose calls off hot rows (``placement.hot_rows``): among the rows that pass, a call
    keeps off a backend at least ``hot`` busy while a cooler row it meets with ``loose`` ×
    room passes (``margin``: its estimate with the margin learned there; ``price``: a cool
    row at most that × the cheapest row that passed; ``measured``: a cool row only once
    measured, "fleet" by any edge, "own" by this one; ``cool``: a row below that busy only,
    ``hot_rows.COOL``; ``slower``: a row at least that × the hot rows' compute only,
    ``hot_rows.SLOWER``; ``share``: hot by this edge's own calls in flight, at least that ×
    its slot share, ``hot_rows.SHARE``); ``on`` False: the brain without it."""
    def apply() -> None:
        hot_rows.ON, hot_rows.HOT, hot_rows.LOOSE = on, hot, loose
        hot_rows.WITH_MARGIN, hot_rows.MAX_PRICE = margin, price
        hot_rows.MEASURED, hot_rows.COOL, hot_rows.SLOWER = measured, cool, slower
        hot_rows.SHARE = share
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
    "hot-rows-price-2-cool-0.5": _hot_rows(True, price=2.0, cool=0.5),
    "hot-rows-price-2-cool-0.7": _hot_rows(True, price=2.0, cool=0.7),
    "hot-rows-cool-0.5": _hot_rows(True, cool=0.5),
    "hot-rows-slower": _hot_rows(True, slower=1.2),
    "hot-rows-price-2-slower": _hot_rows(True, price=2.0, slower=1.2),
    "hot-rows-share-0.75": _hot_rows(True, share=0.75),
    "hot-rows-price-2-share-0.75": _hot_rows(True, price=2.0, share=0.75),
    "hot-rows-price-2-share-0.5": _hot_rows(True, price=2.0, share=0.5),
    "hot-rows-price-3-share-0.75": _hot_rows(True, price=3.0, share=0.75),
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
