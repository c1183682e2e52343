"""The fallback keeps to the rows outside a call's failure domains while any is healthy
(``pipeline.FALLBACK_AVOIDS``; ``benchmarks.cost_check``'s ``fallback-ignores-avoid`` is the
rule before it)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from placement import pipeline
from placement.model import CallContext, Candidate, Hints
from placement.registry import build_profile
from tests.meet_rows import meet_row


def _at(c: Candidate, region: str, cloud: str) -> Candidate:
    return dataclasses.replace(c, region=region, cloud=cloud)


# A cloud outage the table does not know of yet: aws's rows still look fast; gcp's are far
# (RTT 90 ms) and miss a 60 ms SLO even idle, so every row fails the strict test and the
# call falls back.
AWS_H100 = _at(meet_row("use1-h100/v", "use1-h100", compute=10.0, slots=2.0), "us-east-1", "aws")
AWS_T4 = _at(meet_row("use1-t4/v", "use1-t4", compute=30.0, slots=2.0), "us-east-1", "aws")
GCP_L4 = _at(meet_row("euw4-l4/v", "euw4-l4", compute=20.0, slots=2.0, rtt=90.0),
             "europe-west4", "gcp")


def _retry(avoid: frozenset[str]) -> CallContext:
    # the first attempt failed on use1-h100 as a server: excluded, and its region avoided
    return CallContext(Hints(slo_ms=60.0), exclude=frozenset({"use1-h100/v"}),
                       avoid_regions=avoid, inflight={"use1-t4/v": 4})


def test_a_retry_that_falls_back_leaves_the_region_its_attempt_failed_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    profile = build_profile("cheapest")
    ctx = _retry(frozenset({"us-east-1"}))
    rows = [AWS_H100, AWS_T4, GCP_L4]
    monkeypatch.setattr(pipeline, "FALLBACK_AVOIDS", False)
    before = {profile.choose(rows, ctx, random.Random(s)).candidate.deployment_id
              for s in range(20)}
    assert "use1-t4/v" in before  # the rule before: the dead region's other server
    monkeypatch.setattr(pipeline, "FALLBACK_AVOIDS", True)
    for seed in range(20):
        d = profile.choose(rows, ctx, random.Random(seed))
        assert not d.slo_met and d.candidate is GCP_L4


def test_the_avoided_region_still_serves_when_nothing_else_is_healthy() -> None:
    profile = build_profile("cheapest")
    d = profile.choose([AWS_H100, AWS_T4], _retry(frozenset({"us-east-1"})), random.Random(0))
    assert d.candidate is AWS_T4  # soft: a failure domain is avoided, never a refusal


def test_without_failures_the_fallback_is_unchanged() -> None:
    profile = build_profile("cheapest")
    ctx = CallContext(Hints(slo_ms=60.0), inflight={"use1-t4/v": 4})
    got = {profile.choose([AWS_T4, GCP_L4], ctx, random.Random(s)).candidate.deployment_id
           for s in range(20)}
    assert got == {"use1-t4/v"}
