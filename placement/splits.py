"""Traffic splits for compiled routes: the per-call spill, as weights placement can push.

A per-call edge (``Profile.choose``) counts its calls in flight on each backend against its
slot share ``k`` (``Candidate.slots``) and spills a call that would queue past it to the
next deployment. A compiled edge (Envoy) counts nothing per call: it can only follow
weights placement pushed. This module turns what placement knows at a push — the calls/s
an edge sends each class (from its access log), each deployment's latency estimate and
slot share, the margins learned from the class's misses — into the fraction of a class's
calls each deployment should take first, for one edge at a time:

- classes are served tightest SLO first (they have the fewest deployments to go to);
- a class's learned rate is planned as ``RATE_HEADROOM`` (1.25) times itself: the rate is
  an average over the last seconds of the access log, late on a rising load and noisy, and
  a per-call edge never queues a call past its slot share, where a split filled to ``ρ*``
  on the learned rate queued whole seconds of calls on the fleet's cheapest backends
  between pushes (``default``'s Envoy row: 323 of its 925 late calls "queueing not
  foreseen", at each region's rising load, a burst, an outage's end);
- a class fills the deployments every filter keeps for it (``feasible``, cheapest first),
  each up to the load its backend can carry for this edge: ``k × ρ*`` Erlangs of service,
  ``ρ*`` the highest utilisation at which the M/M/c wait a fraction ``tail`` of calls
  exceed (``queueing.wait_ms``, the backend's ``concurrency`` servers) still fits the
  class's slack (``slo − margin − learned − L``, ``L`` the pipeline's own latency estimate);
- a backend's cap only tightens as classes are added (one FIFO: a loose class placed on
  it later must not raise the wait of a tight class already there), and what other paths
  of the same edge send it (``reserved``, e.g. the slow path's calls) comes off first;
- built and off (``MIX_WAIT``): a class whose service time on a backend is more than
  ``MIX_FACTOR`` times the mean of the calls the split's earlier classes put on its
  feasible rows there also keeps the wait at the mix's mean service time within the
  tightest of those classes' slacks (``_mix_room``). A narrower 990d5fc (taken back in
  2d70bf8): only the split's own feasible rows count (not the slow path's calls, not the
  fallback spill), and only where the service times differ by more than the factor.
  Measured (quick, 2 seeds, against off): single-cloud-hetero −0.08/+0.00 point, far-edge
  unchanged (990d5fc's losses there: the slow path's calls in its mix), tight-three-variant
  +0.14/+0.05 point at +1.6/+4.3 % cost, but held-out-near-capacity +0.72/−0.83 point:
  no gain that holds, so off (``benchmarks/RESULTS.md``, "the mix's wait, narrowed");
- what the feasible deployments have no room for spills to the class's fallback rows (the
  rest of its order within the cap, ``Demand.fallback``: the rows only the hard filters
  keep), as a per-call edge's fallback takes the fastest row with a slot of its own share
  free once every feasible row is past its share: fastest first by their p95 without a
  queue (RTT + service p95: the observed p95s near capacity carry the queues, which the
  split plans itself), each up to the ``ρ*`` whose wait fits the SLO from there; a class
  with no feasible row at all is split over its fallback rows this way. Before, the
  overflow stayed on the feasible rows and a class with none went whole to its order's
  first row (``held-out-near-capacity``'s Envoy row, quick: 71.79 %, the per-call policy
  98.75 %; the tight classes' one feasible row or fastest fallback, e.g. one H100 with 2
  slots, took 45 % of a 150 ms class the per-call edges spread over 8 backends; after:
  92.41 %; the fallback by its p95 order up to 0.95 of its share: 88.63 %);
- what no deployment has room for is spread over the feasible and fallback ones in
  proportion to their room at full utilisation (overload spread evenly rather than piled
  on the cheapest);
- a class whose rate nobody has measured yet (``UNKNOWN``: an edge region placement has
  learned nothing of, at a cold start) is split over its feasible deployments in proportion
  to the calls/s each has room for, after the measured classes and without taking their
  room: a per-call edge counting its calls in flight uses each backend up to its slot share
  from its first call, and an order alone sent every edge's whole class to the one
  cheapest deployment in the fleet until the next push (``default``: 551 of the Envoy
  row's 925 late calls in the first 10 s of the quick day).

- a feasible deployment placement saw come back (``warming``: deployment -> its slow-start
  share, ``placement.filters.slow_start.ramp_share`` at the compile,
  ``services.xds.returns``) takes that share of the calls it would take at full room: the
  rest goes on to the feasible rows after it as if its room were that much smaller, so
  Envoy follows a rising weight, not a jump from 0 to the cheapest row's whole class. What
  those rows have no room for goes back to it (up to what its share held off it) before
  any spills to the fallback rows: the ramp moves calls only onto room that meets the SLO,
  never into a queue or a late row (all of a region's deployments back from an outage at
  once). An unmeasured class (by room) gives it its share of its room. A deployment not
  warming is planned as before.

Pure: rates and estimates are inputs, nothing is measured or timed here. The answer for a
class is ``{deployment_id: fraction}`` (fractions sum to 1) over its feasible and fallback
deployments; empty when it has none or no rate was seen (the route then keeps its one
order).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from placement import queueing
from placement.latency import COMPUTE_P95_FACTOR
from placement.model import Candidate

MAX_UTILISATION = 0.95  # never plan a backend fuller than this for anyone
UNKNOWN = math.inf  # a class's rate nobody has measured yet: split by room (see above)
RATE_HEADROOM = 1.25  # a class's learned rate is planned as this many times itself
_BISECT_STEPS = 16
MIX_WAIT = False  # the mix's wait for longer calls joining a backend (docstring): off
MIX_FACTOR = 2.0  # ... when their service time exceeds the mix's mean by this factor


@dataclass(frozen=True, slots=True)
class Demand:
    """One class of calls at one edge: ``feasible`` cheapest first, as the pipeline ranks
    them for the class; ``latency_ms`` the pipeline's estimate per deployment (with what it
    learned); ``budget_ms`` the SLO minus the routing margin."""

    key: Hashable
    budget_ms: float
    rate: float  # calls/s this edge sends the class
    feasible: Sequence[Candidate]
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    # The class's other rows a call may still use (the hard filters keep them), fastest
    # first, as its order continues past ``feasible``: where a per-call edge's fallback
    # sends a call once every feasible row is past its slot share (``spill``).
    fallback: Sequence[Candidate] = ()


def max_utilisation(slack_ms: float, service_ms: float, servers: int,
                    tail: float = queueing.TAIL) -> float:
    """The highest utilisation whose tail wait (``queueing.wait_ms``) fits ``slack_ms``;
    computed for the slack rounded down to whole ms and the service time rounded up to
    0.5 ms (never looser; a bounded set of answers, cached)."""
    if slack_ms < 0 or service_ms <= 0:
        return 0.0
    return _max_utilisation(math.floor(slack_ms), math.ceil(service_ms * 2) / 2, servers,
                            tail)


@functools.lru_cache(maxsize=65536)
def _max_utilisation(slack_ms: float, service_ms: float, servers: int, tail: float) -> float:
    if queueing.wait_ms(service_ms, servers, MAX_UTILISATION, tail) <= slack_ms:
        return MAX_UTILISATION
    lo, hi = 0.0, MAX_UTILISATION
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        if queueing.wait_ms(service_ms, servers, mid, tail) <= slack_ms:
            lo = mid
        else:
            hi = mid
    return lo


def split(demands: Sequence[Demand], reserved: Mapping[str, float] | None = None,
          tail: float = queueing.TAIL, warming: Mapping[str, float] | None = None
          ) -> dict[Hashable, dict[str, float]]:
    """Fractions per class (see the module docstring). ``reserved``: Erlangs of each
    backend's slots this edge already uses by other paths; ``warming``: deployment -> its
    slow-start share (0-1) of what it would take."""
    warm: Mapping[str, float] = warming or {}
    held: dict[str, tuple[Candidate, float]] = {}  # warming row -> calls/s kept off it
    used: dict[str, float] = dict(reserved or {})  # backend -> Erlangs of this edge
    cap: dict[str, float] = {}  # backend -> utilisation cap, tightened per class
    # backend -> [calls/s, Erlangs, tightest slack ms] the classes put on its feasible rows
    mix: dict[str, list[float]] = {}
    out: dict[Hashable, dict[str, float]] = {}
    for d in sorted(demands, key=lambda x: x.budget_ms):
        if d.rate == UNKNOWN:
            continue
        if d.rate <= 0 or not (d.feasible or d.fallback):
            out[d.key] = {}
            continue
        left = d.rate * RATE_HEADROOM
        rates: dict[str, float] = {}
        for c in d.feasible:
            s = c.compute_ms / 1000.0
            if s <= 0:
                continue
            lat = d.latency_ms.get(c.deployment_id, c.latency_p95_ms)
            rho = max_utilisation(d.budget_ms - lat, c.compute_ms, max(c.concurrency, 1), tail)
            b = c.backend_id
            rho = min(rho, cap.get(b, MAX_UTILISATION))
            room = c.slots * rho - used.get(b, 0.0)
            if room <= 0:
                continue
            x = min(left, room / s)
            if MIX_WAIT:
                x = _mix_room(c, d.budget_ms - lat, x, mix.get(b), used.get(b, 0.0), tail)
                if x <= 0:
                    continue
            share = warm.get(c.deployment_id)
            if share is not None:  # slow start: the rest is held off it, for the next rows
                held[c.deployment_id] = (c, held.get(c.deployment_id, (c, 0.0))[1]
                                         + x * (1.0 - share))
                x *= share
            rates[c.deployment_id] = rates.get(c.deployment_id, 0.0) + x
            used[b] = used.get(b, 0.0) + x * s
            cap[b] = rho
            m = mix.setdefault(b, [0.0, 0.0, math.inf])
            m[0] += x
            m[1] += x * s
            m[2] = min(m[2], d.budget_ms - lat)
            left -= x
            if left <= d.rate * RATE_HEADROOM * 1e-9:
                left = 0.0
                break
        for c, kept in held.values():  # what no feasible row after it had room for
            if left <= d.rate * RATE_HEADROOM * 1e-9:
                left = 0.0
                break
            x = min(kept, left)
            rates[c.deployment_id] += x
            used[c.backend_id] = used.get(c.backend_id, 0.0) + x * c.compute_ms / 1000.0
            left -= x
        held.clear()
        if left > 0:
            left = _spill(left, d, rates, used, cap, tail)
        if left > 0:
            _spread(left, [*d.feasible, *d.fallback], rates, used)
        total = sum(rates.values())
        out[d.key] = {k: v / total for k, v in rates.items() if v > 0} if total > 0 else {}
    for d in demands:
        if d.rate == UNKNOWN:
            out[d.key] = _by_room(d, used, cap, tail, warm)
    return out


def _mix_room(c: Candidate, slack_ms: float, most: float, mix: list[float] | None,
              used: float, tail: float) -> float:
    """The calls/s of ``c`` (at most ``most``) its backend takes with the M/M/c wait at the
    mean service time of the classes' calls there and ``c``'s within the tightest slack
    (``MIX_WAIT``); ``most`` itself when ``c``'s service time is within ``MIX_FACTOR`` of
    that mean (the utilisation cap already bounds alike calls)."""
    if mix is None or mix[0] <= 0:
        return most
    calls, erlangs, tight = mix
    s = c.compute_ms / 1000.0
    if s <= MIX_FACTOR * erlangs / calls:
        return most
    slack = min(slack_ms, tight)
    servers = max(c.concurrency, 1)

    def fits(x: float) -> bool:
        mean_ms = round((erlangs + x * s) / (calls + x) * 1000.0, 6)
        rho = max_utilisation(slack, mean_ms, servers, tail)
        return c.slots * rho - used - x * s >= -1e-12

    if fits(most):
        return most
    if not fits(0.0):
        return 0.0
    lo, hi = 0.0, most
    for _ in range(2 * _BISECT_STEPS):
        mid = (lo + hi) / 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo if lo > 1e-9 * c.slots / s else 0.0


def _spill(left: float, d: Demand, rates: dict[str, float], used: dict[str, float],
           cap: Mapping[str, float], tail: float) -> float:
    """What the feasible rows had no room for, over the fallback rows (see the module
    docstring); returns what is still left."""
    for c in sorted(d.fallback, key=_idle_ms):
        s = c.compute_ms / 1000.0
        if s <= 0:
            continue
        b = c.backend_id
        rho = max_utilisation(d.budget_ms - _idle_ms(c), c.compute_ms, max(c.concurrency, 1),
                              tail)
        room = c.slots * min(rho, cap.get(b, MAX_UTILISATION)) - used.get(b, 0.0)
        if room <= 0:
            continue
        x = min(left, room / s)
        rates[c.deployment_id] = rates.get(c.deployment_id, 0.0) + x
        used[b] = used.get(b, 0.0) + x * s
        left -= x
        if left <= 1e-12:
            return 0.0
    return left


def _idle_ms(c: Candidate) -> float:
    """``c``'s p95 with no queue: its RTT and its service time's p95."""
    return c.rtt_ms + c.compute_ms * COMPUTE_P95_FACTOR


def _by_room(d: Demand, used: Mapping[str, float], cap: Mapping[str, float],
             tail: float, warm: Mapping[str, float]) -> dict[str, float]:
    """An unmeasured class's fractions: each feasible deployment's calls/s of room (its
    backend's counted once, at its cheapest deployment) over the sum; by full capacity
    when none has room."""
    rates: dict[str, float] = {}
    seen: set[str] = set()
    for c in d.feasible:
        if c.compute_ms <= 0 or c.backend_id in seen:
            continue
        seen.add(c.backend_id)
        lat = d.latency_ms.get(c.deployment_id, c.latency_p95_ms)
        rho = min(max_utilisation(d.budget_ms - lat, c.compute_ms, max(c.concurrency, 1),
                                  tail), cap.get(c.backend_id, MAX_UTILISATION))
        room = c.slots * rho - used.get(c.backend_id, 0.0)
        if room > 0:
            rates[c.deployment_id] = room / (c.compute_ms / 1000.0) * warm.get(
                c.deployment_id, 1.0)
    if not rates and d.feasible:
        _spread(1.0, d.feasible, rates, {})
    total = sum(rates.values())
    return {k: v / total for k, v in rates.items() if v > 0} if total > 0 else {}


def _spread(left: float, feasible: Sequence[Candidate], rates: dict[str, float],
            used: dict[str, float]) -> None:
    """The overflow over the feasible deployments by their calls/s at full utilisation."""
    full = {c.deployment_id: c.slots / (c.compute_ms / 1000.0) for c in feasible
            if c.compute_ms > 0 and c.slots > 0}
    total = sum(full.values())
    if total <= 0 or not math.isfinite(total):
        first = feasible[0]
        rates[first.deployment_id] = rates.get(first.deployment_id, 0.0) + left
        return
    by_id = {c.deployment_id: c for c in feasible}
    for dep, r in full.items():
        x = left * r / total
        rates[dep] = rates.get(dep, 0.0) + x
        c = by_id[dep]
        used[c.backend_id] = used.get(c.backend_id, 0.0) + x * c.compute_ms / 1000.0
