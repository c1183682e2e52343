"""The attempt policy on its own: no gRPC, no router, the clock passed in."""

from __future__ import annotations

import dataclasses
import random

import pytest

from placement import attempts
from placement.attempts import (
    MIN_REMAINING_S,
    VARIANT_GONE,
    AttemptPolicy,
    AttemptSettings,
    CallAttempts,
    attempt_status,
)
from placement.errors import DeadlineTooShort
from placement.model import CallContext, Candidate, Hints
from placement.registry import build_profile


def cand(i: int, region: str = "east", cloud: str = "c", lat: float = 5.0,
         variant: str = "m-v") -> Candidate:
    return Candidate(deployment_id=f"b{i}/{variant}", backend_id=f"b{i}", endpoint=f"ep{i}",
                     variant=variant, region=region, cloud=cloud, accelerator="a",
                     quality=0.8, latency_p95_ms=lat, rtt_ms=0, queue_ms=0, compute_ms=lat,
                     cost_usd=1e-6, spare_capacity=100)


def yes() -> bool:
    return True


def no() -> bool:
    return False


def start(deadline: float | None = 10.0, **settings: float) -> CallAttempts:
    return AttemptPolicy(AttemptSettings(**settings)).start(deadline)  # type: ignore[arg-type]


def test_retryable_status_retries_and_excludes_the_deployment() -> None:
    t = start()
    c = cand(0)
    t.started(c)
    v = t.failed(c, "RESOURCE_EXHAUSTED", [c, cand(1)], now=0.0, try_budget=yes)
    assert v.retry and v.blames_backend
    assert t.exclude == {"b0/m-v"} and t.avoid_regions == frozenset()


def test_non_retryable_status_is_the_backends_answer() -> None:
    t = start()
    c = cand(0)
    t.started(c)
    v = t.failed(c, "INVALID_ARGUMENT", [c, cand(1)], now=0.0, try_budget=yes)
    assert not v.retry and not v.blames_backend and "not retried" in v.reason


def test_a_dead_server_is_excluded_with_all_its_variants() -> None:
    small = cand(0)
    large = dataclasses.replace(small, deployment_id="b0/m-large", variant="m-large")
    t = start()
    t.started(small)
    assert t.failed(small, "UNAVAILABLE", [small, large, cand(1)], 0.0, yes).retry
    assert t.exclude == {"b0/m-v", "b0/m-large"}


@pytest.mark.parametrize("details", [
    "Request for unknown model: 'm-v' has no available versions",  # unloading, or SIGTERM
    "Request for unknown model: 'm-v' is not found",  # gone
])
def test_a_variant_gone_from_its_backend_is_retried_elsewhere_excluding_only_it(
        details: str) -> None:
    small = cand(0)
    large = dataclasses.replace(small, deployment_id="b0/m-large", variant="m-large")
    assert attempt_status("NOT_FOUND", details) == VARIANT_GONE
    t = start()
    t.started(small)
    v = t.failed(small, attempt_status("NOT_FOUND", details), [small, large, cand(1)], 0.0, yes)
    assert v.retry and v.blames_backend
    assert t.exclude == {"b0/m-v"}  # the server's other variants still serve


@pytest.mark.parametrize(("code", "details"), [
    ("NOT_FOUND", "Request for unknown model: 'm-v' version 7 is not found"),  # the caller's
    ("NOT_FOUND", "some model's own NOT_FOUND"),
    ("INVALID_ARGUMENT", "Request for unknown model: 'm-v' is not found"),
])
def test_other_answers_keep_their_status(code: str, details: str) -> None:
    assert attempt_status(code, details) == code
    t = start()
    c = cand(0)
    t.started(c)
    assert not t.failed(c, attempt_status(code, details), [c, cand(1)], 0.0, yes).retry


def test_max_attempts_stops_the_call() -> None:
    t = start(max_attempts=2)
    cands = [cand(0), cand(1), cand(2)]
    t.started(cands[0])
    assert t.failed(cands[0], "UNAVAILABLE", cands, 0.0, yes).retry
    t.started(cands[1])
    v = t.failed(cands[1], "UNAVAILABLE", cands, 0.0, yes)
    assert not v.retry and "2 attempt" in v.reason


def test_retry_budget_is_asked_last_and_only_for_a_retry() -> None:
    asked: list[int] = []

    def budget() -> bool:
        asked.append(1)
        return False

    t = start(max_attempts=1)
    c = cand(0)
    t.started(c)
    assert not t.failed(c, "UNAVAILABLE", [c], 0.0, budget).retry
    assert asked == []  # no retry was possible: no token spent
    t = start()
    t.started(c)
    v = t.failed(c, "UNAVAILABLE", [c], 0.0, budget)
    assert not v.retry and v.reason == "retry budget exhausted" and asked == [1]


def test_no_retry_when_the_deadline_leaves_no_time() -> None:
    t = start(deadline=1.0)
    c = cand(0)
    t.started(c)
    v = t.failed(c, "UNAVAILABLE", [c, cand(1)], now=0.999, try_budget=yes)
    assert not v.retry and v.blames_backend and "deadline" in v.reason


def test_the_callers_own_expired_deadline_does_not_blame_the_backend() -> None:
    t = start(deadline=1.0)
    c = cand(0)
    t.started(c)
    v = t.failed(c, "DEADLINE_EXCEEDED", [c, cand(1)], now=1.0, try_budget=yes)
    assert not v.retry and not v.blames_backend
    assert t.exclude == frozenset()  # nothing learnt about the deployment
    # An attempt timeout well inside the deadline is the backend being slow.
    t = start(deadline=1.0)
    t.started(c)
    v = t.failed(c, "DEADLINE_EXCEEDED", [c, cand(1)], now=0.25, try_budget=yes)
    assert v.retry and v.blames_backend and t.avoid_regions == {"east"}


def test_one_failure_keeps_its_region_a_second_marks_it() -> None:
    cands = [cand(0, "a1", "a"), cand(1, "a1", "a"), cand(2, "b1", "b"), cand(3, "a1", "a")]
    t = start(max_attempts=5)
    t.started(cands[0])
    t.failed(cands[0], "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == frozenset()
    t.started(cands[1])
    t.failed(cands[1], "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == {"a1"}


def test_failures_in_two_regions_of_one_cloud_avoid_the_whole_cloud() -> None:
    cands = [cand(0, "a1", "a"), cand(1, "a2", "a"), cand(2, "a3", "a"), cand(3, "b1", "b")]
    t = start()
    t.started(cands[0])
    t.failed(cands[0], "UNAVAILABLE", cands, 0.0, yes)
    t.started(cands[1])
    t.failed(cands[1], "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == {"a1", "a2", "a3"}


def test_the_last_attempt_crosses_clouds_after_server_failures_in_one() -> None:
    """A cloud outage: two dead servers in one region, a third of the same cloud in another
    region next in the order. Before, the last attempt went to it (all three on the dead cloud);
    now the whole cloud is avoided for the last attempt."""
    cands = [cand(0, "a1", "a"), cand(1, "a1", "a"), cand(2, "a2", "a"), cand(3, "b1", "b")]
    t = start()
    t.started(cands[0])
    t.failed(cands[0], "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == frozenset()
    t.started(cands[1])
    t.failed(cands[1], "UNAVAILABLE", cands, 0.0, yes)
    assert t.last is False and t.avoid_regions == {"a1", "a2"}


@pytest.mark.parametrize(("statuses", "clouds", "avoided"), [
    (("RESOURCE_EXHAUSTED", "UNAVAILABLE"), ("a", "a"), {"a1"}),  # a full server is no outage
    # failures in two clouds: no one cloud is avoided, the two regions they failed in are
    (("UNAVAILABLE", "UNAVAILABLE"), ("b", "a"), {"b1", "a1"}),
])
def test_the_last_attempt_keeps_the_cloud_unless_it_failed_as_servers_in_it(
        statuses: tuple[str, str], clouds: tuple[str, str], avoided: set[str]) -> None:
    cands = [cand(0, f"{clouds[0]}1", clouds[0]), cand(1, "a1", clouds[1]),
             cand(2, "a2", "a"), cand(3, "c1", "c")]
    t = start()
    for c, status in zip(cands[:2], statuses, strict=True):
        t.started(c)
        t.failed(c, status, cands, 0.0, yes)
    assert t.avoid_regions == avoided


def test_the_last_attempt_leaves_every_region_a_server_failed_in() -> None:
    """held-out-many-models' spot outage (``benchmarks.costsim.fail_diag``): dead servers in
    two clouds' Tokyo regions, still listed by the table. One failed in g1, one in a1: before,
    neither region was marked (one failure each, two clouds) and the cheapest profile sent
    the last attempt back to g1's other dead server; now both regions are avoided and it
    takes the dearer server elsewhere. Fails on the old code."""
    cands = [cand(0, "g1", "gcp"), cand(1, "a1", "aws"), cand(2, "g1", "gcp"),
             dataclasses.replace(cand(3, "s1", "oci"), cost_usd=5e-6)]
    t = start()
    for c in cands[:2]:
        t.started(c)
        assert t.failed(c, "UNAVAILABLE", cands, 0.0, yes).retry
    assert t.last is False and t.avoid_regions == {"g1", "a1"}
    ctx = CallContext(Hints(slo_ms=1000.0), exclude=t.exclude, avoid_regions=t.avoid_regions)
    chosen = build_profile("cheapest").choose(cands, ctx, random.Random(0)).candidate
    assert chosen.backend_id == "b3"


def test_a_busy_server_among_the_failures_marks_no_region_for_the_last_attempt() -> None:
    """A RESOURCE_EXHAUSTED is a full queue, not an outage: the rule waits for server
    failures only, as the one-cloud rule does."""
    cands = [cand(0, "g1", "gcp"), cand(1, "a1", "aws"), cand(2, "g1", "gcp")]
    t = start()
    for c, status in zip(cands[:2], ("RESOURCE_EXHAUSTED", "UNAVAILABLE"), strict=True):
        t.started(c)
        t.failed(c, status, cands, 0.0, yes)
    assert t.avoid_regions == frozenset()


def test_with_more_attempts_left_the_failed_regions_are_not_yet_avoided() -> None:
    cands = [cand(0, "g1", "gcp"), cand(1, "a1", "aws"), cand(2, "g1", "gcp")]
    t = start(max_attempts=5)
    for c in cands[:2]:
        t.started(c)
        t.failed(c, "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == frozenset()


def test_with_more_attempts_left_one_cloud_is_not_yet_avoided() -> None:
    cands = [cand(0, "a1", "a"), cand(1, "a1", "a"), cand(2, "a2", "a"), cand(3, "b1", "b")]
    t = start(max_attempts=5)
    for c in cands[:2]:
        t.started(c)
        t.failed(c, "UNAVAILABLE", cands, 0.0, yes)
    assert t.avoid_regions == {"a1"}


def test_attempt_timeout_is_bounded_while_retries_remain() -> None:
    c = cand(0, lat=100.0)
    t = start(deadline=10.0)
    t.started(c)
    assert t.next_timeout(c, now=0.0) == pytest.approx(0.4)  # 4 × p95
    t.started(c)
    t.started(c)
    assert t.last and t.next_timeout(c, now=0.0) == pytest.approx(10.0)  # the rest
    fast = cand(1, lat=1.0)
    t = start(deadline=None)
    t.started(fast)
    assert t.next_timeout(fast, now=0.0) == pytest.approx(0.25)  # the floor
    t = start(deadline=0.1)
    t.started(c)
    assert t.next_timeout(c, now=0.0) == pytest.approx(0.1)  # never past the deadline
    with pytest.raises(DeadlineTooShort):  # expired: no attempt starts at all
        t.next_timeout(c, now=5.0)


def test_hedging_needs_a_tight_slo_a_spare_attempt_and_budget() -> None:
    t = start(hedge_max_slo_ms=50)
    c = cand(0)
    t.started(c)
    assert t.should_hedge(30) and not t.should_hedge(300) and not t.should_hedge(0)
    assert not t.hedge(c, no, 0.0) and not t.hedged
    assert t.hedge(c, yes, 0.0) and t.hedged and t.exclude == {"b0/m-v"}
    assert not start(hedge_max_slo_ms=0).should_hedge(30)
    last = start(hedge_max_slo_ms=50, max_attempts=1)
    last.started(c)
    assert not last.should_hedge(30)


def test_a_stream_that_sent_a_response_cannot_move() -> None:
    t = start()
    c = cand(0)
    t.started(c)
    t.commit()
    v = t.failed(c, "UNAVAILABLE", [c, cand(1)], 0.0, yes)
    assert not v.retry and v.blames_backend and "already sent" in v.reason


def test_a_lost_hedge_leg_excludes_without_a_verdict() -> None:
    t = start(deadline=1.0)
    c = cand(0)
    assert t.lost(c, "UNAVAILABLE", [c], now=0.1)
    assert t.exclude == {"b0/m-v"}
    assert not t.lost(cand(1), "DEADLINE_EXCEEDED", [c], now=1.0)  # the caller's deadline
    assert not t.lost(cand(1), "INVALID_ARGUMENT", [c], now=0.1)


# -- the one "too little deadline left" rule -----------------------------------------------


def test_no_attempt_of_any_kind_starts_with_too_little_deadline_left() -> None:
    """Unary attempts (``next_timeout``), stream attempts (``remaining``) and the rule itself
    raise the one error; just above the threshold every one of them starts."""
    c = cand(0, lat=100.0)
    late = 10.0 - MIN_REMAINING_S / 2  # 1 ms left of a deadline at 10 s
    asks = [lambda t, now: t.check_time_left(now), lambda t, now: t.next_timeout(c, now),
            lambda t, now: t.next_timeout(c, now, alone=True), lambda t, now: t.remaining(now)]
    for ask in asks:
        t = start(deadline=10.0)
        with pytest.raises(DeadlineTooShort) as err:
            ask(t, late)
        assert err.value.grpc_code == "DEADLINE_EXCEEDED"
        assert "1.0 ms of the caller's deadline left" in err.value.message
        assert "MIN_REMAINING_S" in err.value.message
        ask(t, 10.0 - 2 * MIN_REMAINING_S)  # 4 ms left: allowed
    assert start(deadline=None).remaining(1e9) is None  # no deadline, no rule


def test_a_hedge_does_not_start_with_too_little_deadline_left() -> None:
    t = start(deadline=1.0, hedge_max_slo_ms=50)
    c = cand(0)
    t.started(c)
    spent: list[bool] = []

    def budget() -> bool:
        spent.append(True)
        return True

    assert not t.hedge(c, budget, now=1.0 - MIN_REMAINING_S / 2)
    assert not t.hedged and t.exclude == frozenset() and spent == []  # no retry token spent
    assert t.hedge(c, budget, now=0.5) and spent == [True]


def test_with_the_region_marked_at_once_a_refusal_sends_the_retry_out_of_its_region(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``SERVER_FAILURE_MARKS_REGION`` (built and off): held-out-many-models' other 25 failed
    calls tried g1's two dead pools in turn; with it the retry leaves g1 at once."""
    monkeypatch.setattr(attempts, "SERVER_FAILURE_MARKS_REGION", True)
    cands = [cand(0, "g1", "gcp"), cand(2, "g1", "gcp"), cand(1, "a1", "aws"),
             dataclasses.replace(cand(3, "s1", "oci"), cost_usd=5e-6)]
    t = start()
    t.started(cands[0])
    assert t.failed(cands[0], "UNAVAILABLE", cands, 0.0, yes).retry
    assert t.avoid_regions == {"g1"}
    ctx = CallContext(Hints(slo_ms=1000.0), exclude=t.exclude, avoid_regions=t.avoid_regions)
    assert build_profile("cheapest").choose(cands, ctx, random.Random(0)).candidate.backend_id \
        == "b1"
