"""What a drill measured: per-phase calls, failures, latency and cost, and time to reroute.

A call belongs to the phase in which it was *sent* (before / during / after the fault),
except that a call still in flight when the fault is injected belongs to the fault window
(the during phase): the calls a SIGKILL cuts off are the first to notice it; and a call
scheduled before the restore that left the client after it (a busy host's thread pool)
belongs to the after phase, since the restored mesh answers it.
A call *noticed* the fault when it failed, was served by (or retried away from) a faulted
backend, was passed to another edge by the client, or took longer than the slow threshold
(3x the before-phase p99, at least +200 ms). **Time to reroute** is from the fault to the
end of the first burst of such calls (calls noticing the fault less than ``burst_gap_s``
apart), provided ``streak`` clean calls follow; later bursts are counted as relapses (a
gray-failing backend re-admitted after its ejection, for example). When no call noticed
the fault there is no time to reroute (never 0).

**Verdict**: a drill passes only when no call failed, something was checked and every check
held, and the fault was observed (by the calls, or for scenarios no call is expected to
notice, such as a drain or a placement outage, by the checks that read the mesh).

The verdict is on what the mesh did to the calls the client issued: each call that left the
client is accounted for (answered, or failed with its status), its latency and deadline run
from when it left (``Call.latency_ms``). How far the client itself fell short of its planned
rate on a busy host (ticks dropped, calls started late: ``Call.lag_s``) is reported as the
client's (``client_notes``), never counted as calls lost; the load only has to have measured
every phase (``load_checks``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from services.drills.load import Call
from services.render import table

PHASES = ("before", "during", "after")
LATE_S = 0.1  # a call the client started this long after its schedule started late


def _pct(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class PhaseStats:
    phase: str
    seconds: float
    sent: int
    failed: int
    failed_by_status: dict[str, int]
    retried: int                      # answered OK after more than one edge attempt
    client_failovers: int
    p50_ms: float | None
    p99_ms: float | None
    cost_per_1k_usd: float | None
    served_by: dict[str, int]
    not_sent: int = 0                 # ticks the client dropped: its backlog was full
    # Up to 3 distinct "STATUS: details" of failed calls, to say what went wrong.
    failures: list[str] = field(default_factory=list)
    planned: int = 0                  # calls the rate plans for the phase (0: not given)
    late: int = 0                     # calls the client started over LATE_S after schedule
    lag_max_ms: float = 0.0           # the client's longest such delay

    @classmethod
    def of(cls, phase: str, seconds: float, calls: Sequence[Call], not_sent: int = 0,
           rate: float = 0.0) -> PhaseStats:
        ok = [c for c in calls if c.ok]
        lat = sorted(c.latency_ms for c in ok)
        return cls(phase, round(seconds, 2), len(calls), len(calls) - len(ok),
                   dict(Counter(c.status for c in calls if not c.ok)),
                   sum(1 for c in ok if c.attempts > 1),
                   sum(1 for c in calls if c.client_failover),
                   _pct(lat, 50), _pct(lat, 99),
                   1000 * sum(c.cost_usd for c in ok) / len(ok) if ok else None,
                   dict(Counter(c.served_by for c in ok).most_common()), not_sent,
                   list(dict.fromkeys(f"{c.status}: {c.detail}" for c in calls
                                      if not c.ok))[:3],
                   round(rate * seconds), sum(1 for c in calls if c.lag_s > LATE_S),
                   round(1000 * max((c.lag_s for c in calls), default=0.0), 1))


@dataclass
class Reroute:
    seconds: float | None             # None: nothing noticed the fault, or never settled
    noticed: int                      # calls that noticed the fault (first burst)
    relapses: int                     # calls noticing it again in later bursts
    slow_threshold_ms: float

    @property
    def outcome(self) -> str:
        """``rerouted``, ``not noticed`` (no call saw the fault) or ``never settled``."""
        if self.noticed == 0:
            return "not noticed"
        return "never settled" if self.seconds is None else "rerouted"

    def describe(self) -> str:
        if self.outcome == "rerouted":
            assert self.seconds is not None
            return f"{self.seconds * 1000:.0f} ms"
        if self.outcome == "not noticed":
            return "none (no call noticed the fault)"
        return "never (load did not settle)"


def split_phases(calls: Sequence[Call], marks: tuple[float, float, float, float]
                 ) -> dict[str, list[Call]]:
    """Calls by phase; ``marks`` are (before, fault, restore, end) on the load's clock.

    A call sent before the fault but not answered by then was in flight at the fault: it
    belongs to the during phase, where the fault reached it. At the restore the boundary is
    when a call *left the client* (``Call.left``): on a busy host a call scheduled just
    before the restore can leave after it, and what answers it then is the restored mesh.
    """
    t_before, t_fault, t_restore, t_end = marks
    out: dict[str, list[Call]] = {p: [] for p in PHASES}
    for c in calls:  # a call is answered after it is sent: done >= sent
        if t_before <= c.sent and c.done < t_fault:
            out["before"].append(c)
        elif t_before <= c.sent and c.left < t_restore:  # during the fault, or in flight at it
            out["during"].append(c)
        elif t_restore <= c.left and c.sent < t_end:
            out["after"].append(c)
    return out


@dataclass
class DrillReport:
    scenario: str
    target: str                       # what was broken
    faulted_backends: list[str]
    rate: float
    deadline_s: float
    slo_ms: float | None
    fault_at_s: float
    restore_at_s: float | None
    phases: list[PhaseStats]
    reroute: Reroute
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    # False for faults no call is expected to notice (a drain, placement going away): then
    # the scenario's checks must observe the fault in the mesh itself.
    expect_noticed: bool = True
    # How long the broken part itself was out, when the scenario restarts it (edge-restart:
    # SIGTERM to serving again): the reroute is judged against it, not against a clock.
    outage_s: float | None = None

    @property
    def problems(self) -> list[str]:
        """Why the drill failed; empty when it passed."""
        out = []
        if self.failed:
            out.append(f"{self.failed} of {self.sent} calls failed")
        if not self.checks:
            out.append("nothing was checked")
        out += [f"check failed: {k}" for k, ok in self.checks.items() if not ok]
        outcome = self.reroute.outcome
        if outcome == "not noticed" and self.expect_noticed:
            out.append("the fault was never observed: no call noticed it")
        elif outcome == "never settled":
            out.append("the load never settled away from the fault")
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.phases)

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self.phases)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["failed"], d["sent"] = self.failed, self.sent
        d["passed"], d["problems"] = self.passed, self.problems
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        rows = []
        for p in self.phases:
            sent = str(p.sent) + (f" of {p.planned}" if p.planned > p.sent else "")
            rows.append([p.phase, f"{p.seconds:.1f}", sent, str(p.failed),
                         ", ".join(f"{k} {v}" for k, v in p.failed_by_status.items()) or "-",
                         str(p.retried), str(p.client_failovers), _ms(p.p50_ms), _ms(p.p99_ms),
                         "-" if p.cost_per_1k_usd is None else f"{p.cost_per_1k_usd:.6f}",
                         _top(p.served_by)])
        r = self.reroute
        head = (f"drill {self.scenario}: {self.target}  ({self.rate:g} calls/s, deadline "
                f"{self.deadline_s:g} s" + (f", x-slo-ms {self.slo_ms:g}" if self.slo_ms else "")
                + ")")
        foot = [f"time to reroute: {r.describe()}  ({r.noticed} calls noticed the fault, "
                f"{r.relapses} relapses; slow = > {r.slow_threshold_ms:.0f} ms)",
                f"calls: {self.sent} sent, {self.failed} failed"]
        foot += [f"failed in {p.phase}: {f}" for p in self.phases for f in p.failures]
        foot += [f"check {k}: {'ok' if v else 'FAILED'}" for k, v in self.checks.items()]
        foot += [f"note: {n}" for n in self.notes]
        foot.append("verdict: " + ("PASSED" if self.passed
                                   else "FAILED: " + "; ".join(self.problems)))
        headers = ["phase", "s", "sent", "failed", "by status", "retried", "other edge",
                   "p50 ms", "p99 ms", "$ per 1k", "served by (top 3)"]
        return "\n".join([head, table(headers, rows), *foot])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _top(served: dict[str, int]) -> str:
    total = sum(served.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(served.items())[:3]) or "-"


def noticed(call: Call, faulted: set[str], slow_ms: float) -> bool:
    return (not call.ok or call.client_failover or call.backend in faulted
            or (call.attempts > 1 and bool(faulted)) or call.latency_ms > slow_ms)


def time_to_reroute(calls: Sequence[Call], fault_at: float, end_at: float, faulted: set[str],
                    slow_ms: float, streak: int = 10, burst_gap_s: float = 1.0) -> Reroute:
    """See the module docstring; ``calls`` sorted by send time.

    The window is every call that left the client before ``end_at`` and was still
    unanswered at ``fault_at`` (sent during the fault, or in flight when it struck).
    """
    window = [c for c in calls if c.left < end_at and c.done >= fault_at]
    hit = [i for i, c in enumerate(window) if noticed(c, faulted, slow_ms)]
    if not hit:
        return Reroute(None, 0, 0, slow_ms)
    first_burst_end = 0
    for k in range(1, len(hit)):
        if window[hit[k]].sent - window[hit[k - 1]].sent > burst_gap_s:
            break
        first_burst_end = k
    clean_after = len(window) - hit[first_burst_end] - 1
    if first_burst_end + 1 < len(hit):
        clean_after = hit[first_burst_end + 1] - hit[first_burst_end] - 1
    seconds = max(c.done for c in (window[i] for i in hit[:first_burst_end + 1])) - fault_at
    return Reroute(round(seconds, 3) if clean_after >= streak else None,
                   first_burst_end + 1, len(hit) - first_burst_end - 1, slow_ms)


# A call leaves the client, then its edge routes it: how much later than the edges' view was
# read the edge may route it (a busy host's scheduling), in ``learned_check``.
ROUTE_SLACK_S = 0.5


def learned_check(calls: Sequence[Call], learned_at: float, until: float,
                  faulted: set[str]) -> dict[str, bool]:
    """A drain's bar: no call that left the client ``ROUTE_SLACK_S`` after every edge's
    tables marked ``faulted`` unroutable (``learned_at``) and before ``until`` (the restore)
    was served there. Calls routed before may finish there: that is what a drain allows."""
    late = late_calls(calls, learned_at, until, faulted)
    return {f"no call sent {ROUTE_SLACK_S:g} s after every edge learned of the fault reached "
            f"{', '.join(sorted(faulted))}": not late}


def late_calls(calls: Sequence[Call], learned_at: float, until: float,
               faulted: set[str]) -> list[Call]:
    """The calls ``learned_check`` holds against the drain."""
    since = learned_at + ROUTE_SLACK_S
    return [c for c in calls if since <= c.left < until and c.backend in faulted]


def describe_late(c: Call, learned_at: float) -> str:
    """One late call, on the drill's clock, for the report's notes."""
    return (f"drill-{c.seq} scheduled {c.sent:.3f} s, left the client {c.left:.3f} s "
            f"({c.left - learned_at:+.3f} s after every edge learned of the fault), answered "
            f"{c.done:.3f} s by {c.served_by} in {c.attempts} attempt(s)")


def load_checks(phases: Sequence[PhaseStats], issued: int, answered: int, streak: int = 10
                ) -> dict[str, bool]:
    """The load measured the drill: every call the client issued has its outcome (``answered``
    of ``issued``: served, or failed with its status; none vanished in the client), and at
    least ``streak`` calls left the client in every phase (a time to reroute needs that many
    clean calls after the fault's burst; without this a drill whose client stalled, or sent
    nothing, would report no failure). The client's shortfall against its planned rate is
    not judged here: it is the client's (``client_notes``)."""
    out = {f"every call the client issued has its outcome ({answered} of {issued})":
           answered == issued}
    out.update({f"the load measured the {p.phase} phase (at least {streak} calls left the "
                f"client)": p.sent >= streak for p in phases})
    return out


def client_notes(phases: Sequence[PhaseStats]) -> list[str]:
    """The load client's own shortfall per phase, as notes: calls it did not send at the
    planned rate (ticks dropped or never reached on a host too busy to run it) and calls it
    started late. Not calls the mesh lost: those are the failed ones."""
    out = []
    for p in phases:
        what = []
        if p.planned - p.sent > 0.05 * p.planned:
            what.append(f"sent {p.sent} of {p.planned} planned calls ({p.not_sent} ticks "
                        "dropped)")
        if p.late:
            what.append(f"started {p.late} over {LATE_S * 1000:.0f} ms after their schedule "
                        f"(at most {p.lag_max_ms:.0f} ms; their deadline and latency run from "
                        "when they left)")
        if what:
            out.append(f"load client, {p.phase} phase: " + "; ".join(what)
                       + ": the client's shortfall on this host, not calls the mesh lost")
    return out


def slow_threshold(before: Sequence[Call]) -> float:
    lat = sorted(c.latency_ms for c in before if c.ok)
    p99 = _pct(lat, 99) or 100.0
    return max(3 * p99, p99 + 200.0)
