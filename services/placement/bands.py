"""When a route row is pushed again: the bands of its estimates, its jitter, the cadence of
learned changes (``services.placement.hub`` runs them on every rebuilt row).

A row is pushed again when an edge would route differently on it (``material``): a field
an edge reads exactly changed, spare capacity crossed zero, or an estimate left its band. An
estimate's band is the wider of a fixed one (``_BANDS``: relative to the value last pushed,
with an absolute floor) and the row's own jitter (``NOISE_K`` times the mean move of that
estimate between the row's consecutive builds, ``Jitter``). The fixed 3-10 % bands alone
were narrower than a real mesh's report-to-report noise (compute and queue 5-30 %, a
loopback RTT of 1-3 ms moving to 20-100 ms on a loaded host): a steady two-instance test
mesh republished 4 times a second (``tests/unit/test_hub_churn.py``).

Changes learned from telemetry (the estimates, slot shares, ``LEARNED``) also wait for the
estimate cadence: at most one publish of them every ``ESTIMATE_EVERY_S`` (the hub's
``estimate_every_s``), the first after a quiet spell at once; the rest (a row added or gone,
availability, readiness, drops, spare capacity crossing zero, an estimate that doubled or
halved: ``large``) is published at once. ``judge`` is that decision for one rebuilt row, run
by the hub and by the simulator's ``benchmarks.costsim.publish``.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter

from placement.model import Candidate

# Estimates: (field, relative band, absolute band). A row whose estimates all stay within
# max(relative x last pushed, absolute) of what was last pushed is not pushed again.
_BANDS = (("latency_p95_ms", 0.03, 0.5), ("rtt_ms", 0.03, 0.5), ("queue_ms", 0.05, 0.5),
          ("compute_ms", 0.03, 0.2), ("cost_usd", 0.03, 0.0), ("spare_capacity", 0.1, 1.0))
_estimates = attrgetter(*(f for f, _, _ in _BANDS))
_limits = tuple((rel, floor) for _, rel, floor in _BANDS)
_NAMES: tuple[str, ...] = tuple(f for f, _, _ in _BANDS)
_RELS = tuple(rel for _, rel, _ in _BANDS)
_FLOORS = tuple(floor for _, _, floor in _BANDS)
_NO_NOISE = (0.0,) * len(_BANDS)
# Fields learned from telemetry that an edge reads exactly: their changes wait for the
# estimate cadence (``ESTIMATE_EVERY_S``) like the estimates' (slot shares follow the edges'
# 1 Hz call rates; ``observed``: the p95's source).
LEARNED = ("edge_slots", "observed", "mix_compute_ms", "tokens")
# Everything else an edge reads from a row must be equal (fields added later included);
# the learned fields last, so a row whose availability changed too gives that reason.
_EXACT = tuple(sorted((f.name for f in fields(Candidate) if f.name not in dict.fromkeys(
    name for name, _, _ in _BANDS)), key=lambda n: n in LEARNED))
_exact = attrgetter(*_EXACT)
# Reasons that wait for the estimate cadence: a steady mesh's telemetry moves them all the
# time. Anything else (a row added or removed, availability, readiness, drops, penalties,
# concurrency, spare capacity crossing zero, an estimate that doubled or halved: ``_large``)
# is published at once. Between two publishes of estimates ESTIMATE_EVERY_S pass at least.
DEFERRABLE = frozenset((*LEARNED, *(name for name, _, _ in _BANDS)))
# Every reason a publish can give (``material``'s, and the hub's ``added`` and ``removed``):
# the bounded label set of ``switchyard_placement_route_publishes_total``.
REASONS = ("added", "removed", *_EXACT, "spare_crossed_zero", *_NAMES)
ESTIMATE_EVERY_S = 5.0
# The jitter band: an estimate also stays unpushed while it is within NOISE_K times its mean
# move between the row's consecutive builds (an EWMA with weight NOISE_ALPHA, seeded by the
# first move, ``_Jitter``), but never wider than NOISE_CAP times the value last pushed plus
# the fixed floor, so a doubling is always pushed.
NOISE_K = 4.0
NOISE_ALPHA = 0.2
NOISE_CAP = 1.0
Noise = tuple[float, ...]  # per ``_BANDS`` estimate, its mean move between builds


def material(old: Candidate, new: Candidate, noise: Noise | None = None) -> str:
    """Why an edge would route differently on ``new`` than on ``old`` (the row last pushed),
    "" when it would not: the first field that differs of those that must be equal
    (readiness, drops, availability, slots, ...); ``spare_crossed_zero``; or the first
    estimate out of its band (the fixed band, or with ``noise`` the row's jitter band)."""
    exact_old, exact_new = _exact(old), _exact(new)
    if exact_old != exact_new:
        return next(n for n, x, y in zip(_EXACT, exact_old, exact_new, strict=True) if x != y)
    if (old.spare_capacity > 0) != (new.spare_capacity > 0):
        return "spare_crossed_zero"
    # out of max(rel x |a|, floor, jitter) is out of each (the jitter tested last: rarer)
    for name, a, b, rel, floor, n in zip(_NAMES, _estimates(old), _estimates(new), _RELS,
                                         _FLOORS, noise or _NO_NOISE, strict=True):
        d = abs(b - a)
        if d > floor and d > rel * abs(a) and (
                not n or d > min(NOISE_K * n, NOISE_CAP * abs(a) + floor)):
            return str(name)  # (zip of six: typed Any)
    return ""


def large(old: Candidate, new: Candidate) -> bool:
    """An estimate moved by more than NOISE_CAP times its value plus its floor (a doubling,
    or a halving at NOISE_CAP 0.5 and above): not waited for."""
    return any(abs(b - a) > NOISE_CAP * abs(a) + floor
               for a, b, (_, floor) in zip(_estimates(old), _estimates(new), _limits,
                                           strict=True))


class Jitter:
    """Per row, the estimates of its last build and their mean move between builds."""

    __slots__ = ("last", "noise")

    def __init__(self, c: Candidate) -> None:
        self.last: Noise = _estimates(c)
        self.noise: Noise | None = None  # not known before a second build

    def update(self, c: Candidate, why: str) -> None:
        """The row built again; ``why``: what ``material`` found against the row last
        pushed. Its moves are noise only while the row stays within its bands of that row:
        a readiness, drop, slot share or p95 source that changed moves the estimates for a
        reason (an edge's first observed p95 seeding the noise hid the next real move of
        15 %), and so does a move past the band, which, deferred, would have widened the
        band it is judged on again at the estimate cadence."""
        fresh = _estimates(c)
        if why == "":
            moves = [abs(b - a) for a, b in zip(self.last, fresh, strict=True)]
            # a move counts at most NOISE_K times the noise known (a real step widens the
            # band by at most 1.6 times, not by 0.8 times the step)
            self.noise = tuple(moves) if self.noise is None else tuple(
                n + NOISE_ALPHA * ((min(m, NOISE_K * n) if n > 0 else m) - n)
                for m, n in zip(moves, self.noise, strict=True))
        self.last = fresh


HELD = "held"  # ``judge``: a learned change that waits for the estimate cadence


def judge(old: Candidate | None, new: Candidate, jitter: Jitter | None, *,
          fixed_only: bool = False, defer: bool = False) -> tuple[str, Jitter]:
    """Whether the rebuilt row ``new`` is published over ``old`` (the row last published,
    None for a new row): ``material``'s reason ("added" for a new row, "" when it is not
    published), or ``HELD`` for a change only learned (``DEFERRABLE``), not ``large``, while
    ``defer`` (the estimate cadence has not come round). With the row's jitter after this
    build (new for a new row): a step is judged on the jitter from before it.
    ``fixed_only``: the fixed bands alone (a full rebuild: a price moves every row's cost at
    once by less than its jitter band may be)."""
    if old is None:
        why = "added"
    else:
        why = material(old, new, None if fixed_only or jitter is None else jitter.noise)
    if jitter is None:
        jitter = Jitter(new)
    else:
        jitter.update(new, why)
    if defer and old is not None and why in DEFERRABLE and not large(old, new):
        return HELD, jitter
    return why, jitter
