"""The edge's contract with callers, at the unit level: hints that cannot be weakened, policies
nothing can satisfy, metric labels, limits and keepalive settings (issue 10)."""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import replace

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from tritonclient.grpc import service_pb2

from placement.errors import (
    InvalidHint,
    InvalidRequest,
    NoHealthyDeployment,
    PolicyUnsatisfiable,
)
from placement.model import CallContext, Candidate, Hints
from placement.registry import build_profile
from services.edge import statistics
from services.edge.accesslog import (
    MAX_LABEL,
    STATUS_NAMES,
    AccessLog,
    label_value,
    status_label,
)
from services.edge.control import PlacementLink
from services.edge.hints import parse, request_id, resolve
from services.edge.router import CallRecord
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.grpc_errors import status_of
from services.security.settings import LimitsSettings, SecuritySettings
from services.security.tenants import TenantGate
from services.security.transport import CLIENT_KEEPALIVE, server_options

REGIONS = frozenset({"r-east", "r-west", "r-central"})
PROFILES = ("cheapest", "fastest")


def cand(i: int, cost: float, quality: float = 0.8, region: str = "r-east",
         dropped: str = "") -> Candidate:
    return Candidate(deployment_id=f"b{i}/v", backend_id=f"b{i}", endpoint=f"h:{i}",
                     variant="v", region=region, cloud="c", accelerator="a", quality=quality,
                     latency_p95_ms=10, rtt_ms=0, queue_ms=0, compute_ms=10, cost_usd=cost,
                     spare_capacity=10, dropped_reason=dropped)


def hints_of(md: list[tuple[str, str]]) -> Hints:
    return resolve(parse(md, REGIONS, PROFILES), None, 300.0, 5.0, False)


# -- duplicated hint headers -------------------------------------------------------------

def test_a_repeated_hint_that_disagrees_is_rejected_naming_header_and_both_values() -> None:
    with pytest.raises(InvalidHint) as err:
        parse([("x-min-quality", "0.9"), ("x-min-quality", "0.1")], REGIONS, PROFILES)
    assert err.value.header == "x-min-quality"
    assert "'0.9'" in err.value.message and "'0.1'" in err.value.message
    code, _, _ = status_of(err.value)
    assert code is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("header", "a", "b"), [
    ("x-max-cost-usd", "0.001", "1"), ("x-slo-ms", "20", "2000"),
    ("x-allowed-regions", "r-east", "r-east,r-west"), ("x-fail-fast", "true", "false"),
    ("x-routing-profile", "cheapest", "fastest"), ("x-tenant", "a", "b"),
])
def test_every_hint_refuses_disagreeing_repeats(header: str, a: str, b: str) -> None:
    with pytest.raises(InvalidHint, match=header):
        parse([(header, a), ("x-other", "1"), (header, b)], REGIONS, PROFILES)


def test_identical_repeats_are_fine() -> None:
    h = hints_of([("x-min-quality", "0.9"), ("x-min-quality", "0.90"),
                  ("x-allowed-regions", "r-west,r-east"), ("x-allowed-regions", "r-east,r-west")])
    assert h.min_quality == 0.9 and h.allowed_regions == {"r-east", "r-west"}


# -- a cost cap of 0, and policies nothing can satisfy -----------------------------------

def test_no_cost_header_means_no_cap_and_zero_is_a_real_cap() -> None:
    assert hints_of([]).max_cost_usd == math.inf
    assert Hints(slo_ms=10).max_cost_usd == math.inf
    assert hints_of([("x-max-cost-usd", "0")]).max_cost_usd == 0.0
    cands = [cand(0, 0.0), cand(1, 1e-6)]
    profile = build_profile("cheapest")
    d = profile.choose(cands, CallContext(hints_of([("x-max-cost-usd", "0")])),
                       random.Random(0))
    assert d.candidate.deployment_id == "b0/v"  # the free one, never the one that costs


def test_a_zero_cost_cap_nothing_meets_is_failed_precondition() -> None:
    cands = [cand(0, 2e-6), cand(1, 1e-6)]
    ctx = CallContext(hints_of([("x-max-cost-usd", "0")]))
    with pytest.raises(PolicyUnsatisfiable) as err:
        build_profile("cheapest").choose(cands, ctx, random.Random(0))
    assert err.value.lowest_cost_usd == 1e-6
    assert "lowest cost $0.00000100" in err.value.message


def test_a_quality_floor_nothing_meets_is_failed_precondition_without_retry_hint() -> None:
    cands = [cand(0, 1e-6, quality=0.7, region="r-west"),
             cand(1, 2e-6, quality=0.9, region="r-east", dropped="backend down")]
    ctx = CallContext(hints_of([("x-min-quality", "1.0")]))
    with pytest.raises(PolicyUnsatisfiable) as err:
        build_profile("cheapest").choose(cands, ctx, random.Random(0), cost_sorted=True)
    e = err.value
    # What the best candidate offers, healthy or not: the caller can relax the policy.
    assert (e.best_quality, e.lowest_cost_usd, e.regions) == (0.9, 1e-6, ("r-east", "r-west"))
    assert "best quality 0.9" in e.message and "quality >= 1" in e.message
    code, _, trailers = status_of(e)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "retry-after-ms" not in dict(trailers)


def test_regions_nothing_serves_is_failed_precondition() -> None:
    cands = [cand(0, 1e-6, region="r-west")]
    with pytest.raises(PolicyUnsatisfiable, match=r"regions \['r-east'\]"):
        build_profile("fastest").choose(
            cands, CallContext(hints_of([("x-allowed-regions", "r-east")])), random.Random(0))


def test_a_satisfiable_policy_with_nothing_healthy_stays_unavailable_with_retry_hint() -> None:
    cands = [cand(0, 1e-6, quality=0.95, dropped="backend down"), cand(1, 1e-6, quality=0.5)]
    ctx = CallContext(hints_of([("x-min-quality", "0.9")]))
    with pytest.raises(NoHealthyDeployment) as err:
        build_profile("cheapest").choose(cands, ctx, random.Random(0))
    code, _, trailers = status_of(err.value)
    assert code is grpc.StatusCode.UNAVAILABLE and "retry-after-ms" in dict(trailers)


# -- keepalive: the client's pings are what the server permits --------------------------

def test_servers_permit_the_keepalive_pings_clients_send() -> None:
    client = dict(CLIENT_KEEPALIVE)
    server = dict(server_options(LimitsSettings()))
    # gRPC's server defaults (one ping per 5 min, none without calls) strike these pings.
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= \
        client["grpc.keepalive_time_ms"]
    if client["grpc.keepalive_permit_without_calls"]:
        assert server["grpc.keepalive_permit_without_calls"] == 1


async def test_the_edge_placement_link_dials_with_the_shared_keepalive() -> None:
    # async: a grpc.aio channel needs a running loop (a sync test failed after async ones).
    dialled: list[tuple[str, object]] = []
    channels: list[grpc.aio.Channel] = []

    def factory(address: str, options: object = ()) -> grpc.aio.Channel:
        dialled.append((address, options))
        channels.append(grpc.aio.insecure_channel(address))
        return channels[-1]

    link = PlacementLink("e", "r-east", ["127.0.0.1:1"], RouteStore("r-east", None),
                         EdgeStats(10), lambda: None, channel_factory=factory)
    link._stub("127.0.0.1:1")
    assert dialled == [("127.0.0.1:1", CLIENT_KEEPALIVE)]
    for ch in channels:
        await ch.close()


# -- the metadata-count limit counts the caller's entries, not gRPC's own ------------------

USER_AGENT = ("user-agent", "grpc-python-asyncio/1.85.3 grpc-c/58.0.0 (linux; chttp2)")


def test_metadata_count_limit_is_exact() -> None:
    gate = TenantGate(SecuritySettings(plaintext=True,
                                       limits=LimitsSettings(max_metadata_count=64)), {})
    custom = [(f"x-k{i}", "v") for i in range(64)]
    gate.admit([USER_AGENT, *custom])  # exactly the limit: admitted
    with pytest.raises(InvalidRequest, match="65 metadata entries"):
        gate.admit([USER_AGENT, *custom, ("x-k64", "v")])


def test_a_rejected_call_still_gets_a_request_id() -> None:
    assert request_id([USER_AGENT, ("x-request-id", "abc")]) == "abc"
    generated = {request_id([USER_AGENT]) for _ in range(3)}
    assert len(generated) == 3 and all(len(g) == 16 for g in generated)


# -- metrics: status names and bounded labels ------------------------------------------------

def access_log() -> tuple[AccessLog, CollectorRegistry]:
    reg = CollectorRegistry()
    calls = Counter("calls", "", ["model", "deployment", "status"], registry=reg)
    latency = Histogram("latency", "", ["model"], registry=reg)
    attempts = Counter("attempts", "", ["model"], registry=reg)
    return AccessLog(calls, latency, attempts, enabled=False,
                     known_model=lambda m: m == "summarize"), reg


def counted(reg: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {(s.labels["model"], s.labels["deployment"], s.labels["status"]): s.value
            for m in reg.collect() if m.name == "calls" for s in m.samples
            if s.name == "calls_total"}


def record(model: str, status: str, dep: str = "") -> CallRecord:
    r = CallRecord("id", model, status=status, attempts=1)
    if dep:
        r.chosen = replace(cand(0, 1e-6), deployment_id=dep)
    return r


def test_calls_are_counted_once_under_a_status_name() -> None:
    log, reg = access_log()
    for status in ("OK", "CancelledError", "TimeoutError", "ValueError", "DEADLINE_EXCEEDED",
                   "CancelledError"):
        log.done(record("summarize", status, "b0/v"))
    assert counted(reg) == {("summarize", "b0/v", "OK"): 1,
                            ("summarize", "b0/v", "CANCELLED"): 2,
                            ("summarize", "b0/v", "DEADLINE_EXCEEDED"): 2,
                            ("summarize", "b0/v", "UNKNOWN"): 1}
    assert all(status_label(s) in STATUS_NAMES for s in ("OK", "x" * 500, ""))


def test_model_names_outside_the_route_table_never_become_labels() -> None:
    log, reg = access_log()
    for i in range(200):
        log.done(record(f"attacker-{i}", "NOT_FOUND"))
    log.done(record("summarize", "OK", 'b0/v"}\n# ' + "x" * 300))
    got = counted(reg)
    assert got[("unknown", "", "NOT_FOUND")] == 200
    assert len(got) == 2 and len(log._children) == 2
    dep = next(d for m, d, _ in got if m == "summarize")
    assert len(dep) <= MAX_LABEL and dep.startswith("b0/v__")
    assert all(label_value(v) == v for key in got for v in key if v)


def test_the_access_log_line_says_the_status_name_too() -> None:
    out = io.StringIO()
    log, _ = access_log()
    log.enabled, log.out = True, out
    log.done(record("summarize", "CancelledError", "b0/v"))
    log.flush()
    assert json.loads(out.getvalue())["status"] == "CANCELLED"


# -- statistics of a logical model -------------------------------------------------------

def test_statistics_add_up_over_deployments() -> None:
    def stats(n: int, last: int) -> service_pb2.ModelStatistics:
        s = service_pb2.ModelStatistics(name=f"variant-{n}", version="1", last_inference=last,
                                        inference_count=n, execution_count=n)
        s.inference_stats.success.count, s.inference_stats.success.ns = n, 1000 * n
        s.inference_stats.queue.ns = 10 * n
        s.batch_stats.add(batch_size=1).compute_infer.count = n
        s.response_stats["0"].success.count = n
        return s

    total = service_pb2.ModelStatistics(name="summarize", version="1")
    statistics.add(total, stats(2, 50))
    statistics.add(total, stats(3, 40))
    assert (total.name, total.last_inference, total.inference_count) == ("summarize", 50, 5)
    assert total.inference_stats.success.count == 5 and total.inference_stats.success.ns == 5000
    assert total.inference_stats.queue.ns == 50
    assert [(b.batch_size, b.compute_infer.count) for b in total.batch_stats] == [(1, 5)]
    assert total.response_stats["0"].success.count == 5
