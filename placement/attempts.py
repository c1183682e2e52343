"""The attempt policy: what one call may try next, for how long, and when it stops.

One object owns the per-call attempt rules for every caller that retries: the edge's unary
path (``services.edge.router``), its stream path (``services.edge.stream``) and the cost
simulator (``benchmarks.costsim.engine``). It is pure: statuses are gRPC status *names*
(``"UNAVAILABLE"``), the clock is passed in as ``now`` (seconds, the caller's clock), and the
retry budget is a callable the caller owns, asked last so a token is spent only on a retry
that would otherwise happen.

Rules, in the order ``CallAttempts.failed`` applies them:

- a status outside ``RETRYABLE`` ends the call (the backend's own answer, passed through);
  a backend's NOT_FOUND for the variant it was sent is ``VARIANT_GONE`` (``attempt_status``),
  retried like UNAVAILABLE but excluding only that deployment;
- a call whose own deadline has expired (or is within ``MIN_REMAINING_S``) stops, and the
  failure is the caller's, not the backend's (``Verdict.blames_backend`` is False): a
  client's tight deadline says nothing about the server;
- a stream that already sent a response cannot move (``commit``), nor one whose requests
  its caller can no longer have replayed (``unreplayable``: more than the edge keeps),
  unless it can be resumed elsewhere without duplicating what the caller saw
  (``may_resume``: an LLM whose model continues from the prompt plus the tokens already
  delivered);
- ``max_attempts`` attempts, then stop; then the retry budget.

What a failure excludes for the rest of the call: the deployment; after a server failure
(``SERVER_FAILURES``: UNAVAILABLE, a timeout) every variant on that server. Failure domains
widen softly (``avoid_regions``, read by the avoid-region filter): a timeout, or a second
failure in one region, marks the region; failures in two regions of one cloud mark every
region of that cloud, and so does a server failure before the call's last attempt when every
attempt so far failed as a server in that one cloud: the last attempt crosses clouds; when
they failed as servers in several clouds, the last attempt leaves every region they failed in.

**Too little deadline left** is one rule (``CallAttempts.check_time_left``), asked before any
attempt starts: the unary path's first attempt and its retries (``next_timeout``), a hedge's
second leg (``hedge``: no hedge then, the first leg runs on) and every attempt of a stream
(``remaining``). With less than ``MIN_REMAINING_S`` of the caller's deadline left nothing is
forwarded and the call ends with ``DeadlineTooShort`` (DEADLINE_EXCEEDED): such an attempt
could only be cancelled in flight, and Triton 2.51, the pinned wheel's, can crash on calls
whose deadline expires a few ms after they arrive (triton-inference-server/server#7368,
fixed in 24.12).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from placement.errors import DeadlineTooShort

# Not a gRPC status: a Triton backend's NOT_FOUND for the variant the route table named
# (``attempt_status``): that deployment is gone, the table not yet caught up.
VARIANT_GONE = "VARIANT_GONE"
RETRYABLE = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED",
                       "ABORTED", VARIANT_GONE})
SERVER_FAILURES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
CALLER_STATUSES = frozenset({"DEADLINE_EXCEEDED", "CANCELLED"})  # may be the caller's own
MIN_REMAINING_S = 0.002  # less than this left of the caller's deadline: no new attempt
# Before the last attempt, after server failures only (in more than one cloud), every region
# a server failed in is avoided (``CallAttempts._sick_regions``); off: the rule of 9eafa5a.
LAST_LEAVES_FAILED_REGIONS = True
# Every server failure marks its region at once, not only a timeout or a second failure
# there: built and off (``benchmarks.cost_check --variants attempts-region-at-once``). In the
# simulator it fails none of held-out-many-models' calls (28 with the rule above alone) and
# moves no other scenario past its seeds' spread, but the simulator's backends are whole
# pools, refusing only in outages: it cannot price what the edge's rule is for, one dead
# server whose healthy neighbour in its region stays first choice for the retry
# (tests/unit/test_edge_resilience.py), so it is not the default (benchmarks/RESULTS.md).
SERVER_FAILURE_MARKS_REGION = False


# Triton's NOT_FOUND details for a model it does not serve (any version): while it unloads
# "Request for unknown model: 'v' has no available versions", once gone "... 'v' is not
# found". One pattern, read by this policy (Python ``re``) and compiled into Envoy's retry
# policy (RE2, ``services/xds/routes.py``) and listener Lua, so both data planes agree. A
# version the caller named ("... 'v' version 7 is not found") does not match.
TRITON_UNKNOWN_MODEL = "Request for unknown model: '"  # then the name, a quote and:
VARIANT_GONE_ENDINGS = ("has no available versions", "is not found")
VARIANT_GONE_PATTERN = (f"^{TRITON_UNKNOWN_MODEL}[^']*' "
                        f"({'|'.join(VARIANT_GONE_ENDINGS)})$")
_VARIANT_GONE = re.compile(VARIANT_GONE_PATTERN)
# What a caller is told when every deployment it tried answered VARIANT_GONE (UNAVAILABLE):
# the Python edge's router and the Envoy listener's Lua append it to the backend's message.
GONE_HINT = (" (the variant was unloaded there or its server is shutting down; placement "
             "drops it from the route table on its next report: retry)")


def attempt_status(code: str, details: str) -> str:
    """The status the policy reads for a backend's answer ``code`` (a gRPC status name) with
    ``details``. Triton answers NOT_FOUND "Request for unknown model: 'v' has no available
    versions" while it unloads ``v`` (an unload, a server shutting down on SIGTERM) and "...
    'v' is not found" once it is gone: the deployment the table named no longer exists there.
    The caller's model name never reaches a backend unresolved (the edge refuses names its
    table lacks), so it is not the caller's error: ``VARIANT_GONE``, retried at another
    deployment and held against this one (not its server). A NOT_FOUND naming a version the
    caller asked for ("... version 7 is not found") is the caller's: passed through."""
    if code == "NOT_FOUND" and _VARIANT_GONE.match(details):
        return VARIANT_GONE
    return code


class Target(Protocol):
    """What the policy reads of a deployment (``placement.model.Candidate`` is one)."""

    @property
    def deployment_id(self) -> str: ...
    @property
    def backend_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def cloud(self) -> str: ...


class Estimated(Target, Protocol):
    """A target with the p95 its attempt timeout is scaled from."""

    @property
    def latency_p95_ms(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AttemptSettings:
    max_attempts: int = 3
    hedge_max_slo_ms: float = 0.0  # calls with an SLO up to this are hedged; 0 = never
    min_attempt_timeout_s: float = 0.25
    attempt_timeout_factor: float = 4.0  # an attempt may take this many times its p95
    # An attempt's bound also allows its request's bytes at this rate: a p95 is learned from
    # the usual calls, and a 16 MiB request (within max_message_bytes) took 0.3-1.3 s to cross
    # the emulated WAN relay on a loaded host; cut at 250 ms, such calls were retried and
    # ejected four healthy deployments in 40 calls.
    min_transfer_bytes_per_s: float = 8e6


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer to a failed attempt."""

    retry: bool
    reason: str
    # True: the failure counts against the backend (outlier detection). Not for the caller's
    # own deadline or cancellation, nor for statuses that are the backend's answer.
    blames_backend: bool = True


class AttemptPolicy:
    """Shared, stateless: hands each call its own ``CallAttempts``."""

    def __init__(self, settings: AttemptSettings) -> None:
        self.settings = settings

    def start(self, deadline: float | None) -> CallAttempts:
        """A new call; ``deadline`` on the caller's clock, None = no deadline."""
        return CallAttempts(self.settings, deadline)


class CallAttempts:
    """One call's attempts: what was tried and what it excludes; read-only to everyone else.

    ``exclude`` and ``avoid_regions`` are frozensets, replaced (never mutated) on each
    failure, so a context built from them is a snapshot.
    """

    __slots__ = ("_failed_at", "_server_failures", "attempts", "avoid_regions", "committed",
                 "deadline", "exclude", "hedged", "replayable", "resumable", "settings")

    def __init__(self, settings: AttemptSettings, deadline: float | None) -> None:
        self.settings = settings
        self.deadline = deadline
        self.attempts = 0
        self.hedged = False
        self.committed = False
        self.replayable = True
        self.resumable = False
        self.exclude: frozenset[str] = frozenset()
        self.avoid_regions: frozenset[str] = frozenset()
        self._failed_at: list[tuple[str, str]] = []  # (cloud, region) of failed attempts
        self._server_failures = 0  # of them, SERVER_FAILURES

    # -- starting attempts ---------------------------------------------------------------

    @property
    def last(self) -> bool:
        """The attempt under way is the call's last."""
        return self.attempts >= self.settings.max_attempts

    def started(self, c: Target) -> None:
        """An attempt on ``c`` is about to be sent."""
        self.attempts += 1

    def next_timeout(self, c: Estimated, now: float, *, alone: bool = False,
                     size_bytes: int = 0) -> float | None:
        """The attempt's timeout: the rest of the deadline, shortened while retries remain
        (``attempt_timeout_factor`` × its p95, at least ``min_attempt_timeout_s``, plus
        ``size_bytes`` at ``min_transfer_bytes_per_s``).

        ``alone``: no deployment off ``c``'s server could take a retry (a timeout excludes
        the whole server, see ``SERVER_FAILURES``), so a retry has nowhere to go and the
        attempt is the call's last in all but name: it gets the rest of the deadline. Cut
        short, a slow but working server failed the call with DEADLINE_EXCEEDED and most
        of the caller's deadline unused (issue 13: the only deployment meeting a quality
        floor, briefly slow while a variant loaded on the same CPU)."""
        s = self.settings
        bound = (max(s.min_attempt_timeout_s, s.attempt_timeout_factor * c.latency_p95_ms / 1000)
                 + size_bytes / s.min_transfer_bytes_per_s)
        remaining = self.remaining(now)
        if remaining is None:
            return None if self.last or alone else bound
        return remaining if self.last or alone else min(remaining, bound)

    def remaining(self, now: float) -> float | None:
        """The rest of the caller's deadline for an attempt starting now (a stream's attempts
        get all of it); raises ``DeadlineTooShort`` under ``check_time_left``'s rule."""
        self.check_time_left(now)
        return None if self.deadline is None else self.deadline - now

    def expired(self, now: float) -> bool:
        """Less than ``MIN_REMAINING_S`` of the caller's deadline is left."""
        return self.deadline is not None and self.deadline - now < MIN_REMAINING_S

    def check_time_left(self, now: float) -> None:
        """The one "too little deadline left" rule: no attempt starts with less than
        ``MIN_REMAINING_S`` of the caller's deadline left (see the module docstring)."""
        if self.deadline is not None and self.expired(now):
            raise DeadlineTooShort(
                f"{(self.deadline - now) * 1000:.1f} ms of the caller's deadline left, under "
                f"the {MIN_REMAINING_S * 1000:g} ms an attempt needs to start "
                "(placement.attempts.MIN_REMAINING_S): nothing was forwarded")

    # -- hedging -------------------------------------------------------------------------

    def should_hedge(self, slo_ms: float) -> bool:
        """Arm a hedge for this attempt: a tight SLO and an attempt to spare."""
        return not self.last and 0 < slo_ms <= self.settings.hedge_max_slo_ms

    @staticmethod
    def hedge_after_s(expected_ms: float) -> float:
        """Race a second candidate once the first has taken its expected p95."""
        return expected_ms / 1000

    def hedge(self, first: Target, try_budget: Callable[[], bool], now: float) -> bool:
        """The hedge timer fired: True when a second attempt may race ``first`` (which the
        choice of that second attempt then excludes). Not with too little deadline left
        (``check_time_left``'s rule): the first attempt runs on alone."""
        if self.last or self.expired(now) or not try_budget():
            return False
        self.exclude = self.exclude | {first.deployment_id}
        self.hedged = True
        return True

    # -- outcomes ------------------------------------------------------------------------

    def commit(self) -> None:
        """A response reached the caller (streams): the call can no longer move."""
        self.committed = True

    def unreplayable(self) -> None:
        """The stream's requests so far can no longer be sent to another attempt (the edge
        let them go): like a committed call, it cannot move unless it may resume."""
        self.replayable = False

    def may_resume(self) -> None:
        """The committed stream can continue elsewhere (the caller sees no duplicate): its
        failures are retried like any other, within attempts, deadline and budget."""
        self.resumable = True

    def caller_gave_up(self, status: str, now: float) -> bool:
        """A deadline or cancellation that is the caller's own (its deadline has passed)."""
        return status in CALLER_STATUSES and self.expired(now)

    def lost(self, c: Target, status: str, cands: Sequence[Target], now: float) -> bool:
        """Record a failed attempt without deciding on a retry (a hedge leg that failed
        while the other still runs). Returns whether the failure is the backend's."""
        if self.caller_gave_up(status, now):
            return False
        if status not in RETRYABLE:
            return False
        self._exclude_after(c, status, cands)
        return True

    def failed(self, c: Target, status: str, cands: Sequence[Target], now: float,
               try_budget: Callable[[], bool]) -> Verdict:
        """An attempt on ``c`` ended with ``status``: may the call try again?"""
        if self.caller_gave_up(status, now):
            return Verdict(False, "the caller's deadline expired", blames_backend=False)
        if status not in RETRYABLE:
            return Verdict(False, f"{status} is the backend's answer, not retried",
                           blames_backend=False)
        self._exclude_after(c, status, cands)
        stop = self._stop_reason(now)
        if stop:
            return Verdict(False, stop)
        if not try_budget():
            return Verdict(False, "retry budget exhausted")
        return Verdict(True, f"{status} on {c.deployment_id}: trying another deployment")

    def _stop_reason(self, now: float) -> str:
        if self.committed and not self.resumable:
            return "responses already sent: the call cannot move"
        if not self.replayable and not self.resumable:
            return "its requests can no longer be replayed: the call cannot move"
        if self.last:
            return f"{self.attempts} attempt(s), the most a call may make"
        if self.expired(now):
            return "the call's deadline leaves no time for another attempt"
        return ""

    def _exclude_after(self, c: Target, status: str, cands: Sequence[Target]) -> None:
        excluded = {c.deployment_id}
        if status in SERVER_FAILURES:
            # The server failed, not the variant: its other variants would fail the same way
            # (a cloud outage once spent two of three attempts on one dead server's variants).
            excluded.update(x.deployment_id for x in cands if x.backend_id == c.backend_id)
        self.exclude = self.exclude | excluded
        self._failed_at.append((c.cloud, c.region))
        self._server_failures += status in SERVER_FAILURES
        sick = self._sick_regions(c, status, cands)
        if sick - self.avoid_regions:
            self.avoid_regions = self.avoid_regions | sick

    def _last_after_server_failures(self, status: str) -> bool:
        """The next attempt is the call's last and every attempt so far failed as a server
        (``SERVER_FAILURES``): an outage, not one busy or broken variant."""
        return (self.attempts + 1 >= self.settings.max_attempts > 1
                and self._server_failures == len(self._failed_at)
                and status in SERVER_FAILURES)

    def _sick_regions(self, c: Target, status: str, cands: Sequence[Target]) -> set[str]:
        """Failure domains the rest of the call steers away from, widening as failures
        correlate (a cloud-wide outage once took three attempts in three regions of it).

        Before the last attempt, after server failures only: when they were all in ``c``'s
        cloud the last attempt crosses clouds (two dead servers in one region, then a third
        of the same cloud elsewhere, once lost calls of a cloud outage drill); otherwise it
        leaves every region a server failed in (``LAST_LEAVES_FAILED_REGIONS``: with one
        failure in each of two regions neither was marked, and the last attempt went back
        to a second dead server of the first region while the table still listed it: 52 of
        held-out-many-models' 77 failed calls, ``benchmarks.costsim.fail_diag``)."""
        same_cloud = {region for cloud, region in self._failed_at if cloud == c.cloud}
        last = self._last_after_server_failures(status)
        if len(same_cloud) >= 2 or (
                last and all(cloud == c.cloud for cloud, _ in self._failed_at)):
            return {x.region for x in cands if x.cloud == c.cloud}
        if last and LAST_LEAVES_FAILED_REGIONS:
            return {region for _, region in self._failed_at}
        if status == "DEADLINE_EXCEEDED" or self._failed_at.count((c.cloud, c.region)) >= 2 or (
                SERVER_FAILURE_MARKS_REGION and status in SERVER_FAILURES):
            return {c.region}
        return set()
