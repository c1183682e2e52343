"""A hostile audit of what the edge and placement say about themselves, against ground truth.

A real mesh (Triton, placement, agent: ``tests/mesh_harness.py``) and one edge run as the
operator runs it, ``python -m services.cli edge`` in a process of its own, with its /metrics
on a real port and its stderr in a file. A known workload goes through that edge (tritonclient
and raw gRPC): served calls, calls failing in each distinct way (unknown model, bad hint,
caller deadline too short, a cost cap nothing meets, a backend killed under load), streams
ending OK, cancelled by the caller and ended by the edge, and 1,000 calls with made-up model
names, tenants, regions and profiles. Each ``switchyard_*`` series is checked against what the
callers saw (status, ``x-served-by``, ``x-attempts``, ``x-slo-met`` trailers), placement's
against its own fleet and route tables, and every line the edge process wrote must be one
JSON object with ``event``, ``level``, ``timestamp`` and ``logger`` (a ``call`` event per
call, with the access log's fields)."""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import random
import signal
import string
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.config import MeshConfig
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import Mesh, eventually, raw_infer, request_bytes
from tests.metrics_harness import (
    CALLERS,
    Edge,
    Seen,
    check_calls,
    delta,
    edge_fixtures,
    pick,
    placement_series,
    ready,
    served,
    stopped,
    stream,
    unary,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout: the cwd of a child
# what every log line carries (structlog's and the access log's alike)
LOG_FIELDS = {"event", "level", "timestamp", "logger"}
CALL_FIELDS = LOG_FIELDS | {"request_id", "model", "deployment", "region", "attempts",
                            "hedged", "latency_ms", "cost_usd", "slo_ms", "slo_met", "tenant",
                            "status"}


cfg, edge = edge_fixtures("metrics_truth")


# -- the audit ---------------------------------------------------------------------------

async def test_every_call_is_counted_once_as_its_caller_saw_it(mesh: Mesh, edge: Edge) -> None:
    await ready(edge)
    before = edge.series()
    seen: list[Seen] = []
    async with grpc.aio.insecure_channel(edge.address) as ch:
        for i in range(12):
            seen.append(await asyncio.to_thread(served, edge.address,
                                                [("x-slo-ms", "2000"), ("x-tenant", f"t{i}")]))
        for _ in range(3):
            seen.append(await unary(ch, raw=request_bytes("no-such-model"), model="unknown"))
            seen.append(await unary(ch, [("x-slo-ms", "fast")]))
            seen.append(await unary(ch, [("x-max-cost-usd", "0")]))
        seen.append(await stream(ch))
        seen.append(await stream(ch))
        seen.append(await stream(ch, second=request_bytes("summarize")))  # ended by the edge
        seen.append(await stream(ch, cancel_after=1))  # cancelled by the caller
    statuses = collections.Counter((s.model, s.status) for s in seen)
    assert statuses == {("summarize", "OK"): 12, ("unknown", "NOT_FOUND"): 3,
                        ("summarize", "INVALID_ARGUMENT"): 3,
                        ("summarize", "FAILED_PRECONDITION"): 3, ("generate", "OK"): 2,
                        ("generate", "INVALID_ARGUMENT"): 1, ("generate", "CANCELLED"): 1
                        }, statuses
    await eventually(lambda: pick(delta(edge.series(), before),
                                  "switchyard_edge_calls_total") == len(seen), 10,
                     "every call counted")
    d = delta(edge.series(), before)
    check_calls(d, seen)
    # Routed calls (hints resolved) by whether each met its own SLO: the served ones as
    # their x-slo-met trailer says; a cost cap nothing meets is a miss; a bad hint or an
    # unknown model was never routed.
    met = sum(1 for s in seen if s.status == "OK" and s.trailers.get("x-slo-met") == "true")
    assert pick(d, "switchyard_edge_slo_calls_total", met="true") == met
    routed = len(seen) - 6  # the bad hints and unknown models
    assert pick(d, "switchyard_edge_slo_calls_total", met="false") == routed - met


async def test_a_caller_deadline_too_short_is_counted_once(mesh: Mesh, edge: Edge) -> None:
    """Deadlines that run out while the only allowed backend holds the call (its Triton
    stopped, SIGSTOP: nothing answers), and deadlines the edge refuses at once (under
    ``MIN_REMAINING_S`` left when it reads the call; gRPC may answer those itself before
    the edge's handler runs: then the edge never saw them and cannot count them)."""
    await ready(edge)
    before = edge.series()
    async with grpc.aio.insecure_channel(edge.address) as ch:
        with stopped(mesh.tritons["west-cheap"]):
            seen = list(await asyncio.gather(*(
                unary(ch, [("x-allowed-regions", "r-west")], timeout=0.3) for _ in range(3))))
        for _ in range(3):
            seen.append(await unary(ch, timeout=0.0005))
    assert {s.status for s in seen} == {"DEADLINE_EXCEEDED"}, seen
    await eventually(lambda: pick(delta(edge.series(), before), "switchyard_edge_calls_total",
                                  deployment="west-cheap/summarize-small") == 3, 10,
                     "the forwarded calls counted")
    d = delta(edge.series(), before)
    refused = pick(d, "switchyard_edge_calls_total", deployment="", status="DEADLINE_EXCEEDED")
    assert refused <= 3 and pick(d, "switchyard_edge_calls_total") == 3 + refused, d
    # The caller's own timer ended them: no trailers reached it. What the edge did: one
    # attempt, given the rest of the deadline, for each forwarded call; none for a refused one.
    assert pick(d, "switchyard_edge_attempts_total") == 3
    assert pick(d, "switchyard_edge_call_seconds_count") == 3 + refused
    # A refused call whose message the edge read had an SLO (missed); one whose deadline ran
    # out before its message came was refused before routing, with no model and no SLO
    # (counted under the model ``unknown``, not in slo_calls: accesslog's rule, since 412b8f9
    # reads a ModelInfer's message in its handler)
    read = pick(d, "switchyard_edge_calls_total", deployment="", status="DEADLINE_EXCEEDED",
                model="summarize")
    assert pick(d, "switchyard_edge_slo_calls_total", met="false") == 3 + read


HEADER_CHARS = "".join(map(chr, range(0x21, 0x7F)))  # what gRPC lets a header value hold
NAME_CHARS = string.printable + "\u00e9\u202e\u0000\U0001f600\"{}="  # a model name: any


def _junk(rng: random.Random, n: int, chars: str = HEADER_CHARS) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


async def test_made_up_models_tenants_regions_add_no_series(mesh: Mesh, edge: Edge) -> None:
    """1,000 calls naming made-up models, tenants, regions and profiles: the same series
    on the edge and on placement before and after, only the counts move."""
    await ready(edge)
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(edge.address) as ch:
        warmup = [await unary(ch, raw=request_bytes("made-up"), model="unknown"),
                  await unary(ch, [("x-allowed-regions", "r-nowhere")])]
        before, p_before = edge.series(), placement_series(mesh)
        seen = list(warmup)
        for start in range(0, 1000, 50):
            batch = []
            for i in range(start, start + 50):
                md = [("x-tenant", _junk(rng, 40))]
                if i % 2:
                    seen_as, raw = "unknown", request_bytes(_junk(rng, rng.randint(1, 300), NAME_CHARS))
                else:
                    seen_as, raw = "summarize", request_bytes()
                    md.append(rng.choice([("x-allowed-regions", _junk(rng, 12)),
                                          ("x-routing-profile", _junk(rng, 12))]))
                batch.append(unary(ch, md, raw, seen_as))
            seen += await asyncio.gather(*batch)
    assert collections.Counter(s.status for s in seen[2:]) == {"NOT_FOUND": 500,
                                                               "INVALID_ARGUMENT": 500}
    await eventually(lambda: pick(delta(edge.series(), before),
                                  "switchyard_edge_calls_total") == 1000, 10,
                     "every call counted")
    after, p_after = edge.series(), placement_series(mesh)
    assert set(after) == set(before), set(after) ^ set(before)
    assert set(p_after) == set(p_before), set(p_after) ^ set(p_before)


async def test_placement_counts_what_it_holds(mesh: Mesh, edge: Edge) -> None:
    """Registered backends, watching edges (back to the old count when one leaves), and
    per-call cost as the edges hold it in their tables."""
    await ready(edge)
    s = placement_series(mesh)
    assert pick(s, "switchyard_placement_backends") == len(mesh.placement.service.fleet.backends)
    assert pick(s, "switchyard_placement_watchers") == 2  # edge-east and the edge process
    # every report the agent sent was taken (one agent: none ignored), between rounds
    await eventually(lambda: pick(placement_series(mesh),
                                  "switchyard_placement_telemetry_reports_total")
                     == mesh.agent.reports_sent > 0, 10,
                     "placement counted each of the agent's reports", poll_s=0.01)
    assert pick(s, "switchyard_placement_push_latency_seconds_count") >= 1

    def costs_match() -> bool:
        s = placement_series(mesh)
        rows = {(m, c.deployment_id): c.cost_usd
                for m, cs in mesh.edge.router.store.candidates.items() for c in cs}
        return all(pick(s, "switchyard_placement_deployment_cost_usd", model=m,
                        deployment=d) == pytest.approx(cost, rel=1e-9)
                   for (m, d), cost in rows.items())

    await eventually(costs_match, 10, "the cost gauges equal the edge's rows")


async def test_a_stream_on_a_silent_backend_is_counted_as_its_caller_saw_it(
        mesh: Mesh, edge: Edge) -> None:
    """A stream whose backend stops answering (its Triton stopped, SIGSTOP): the edge gives
    its attempt up once the health checks find the backend unreachable, counted once in
    streams_given_up_total as logged; the stream is counted under the status its caller saw
    (moved to the other deployment: OK with its two attempts). Before, when the stream's
    first write blocked on the stopped backend (2 runs of 3), the give-up was counted but
    the stream never moved: its caller waited out its deadline."""
    await ready(edge)
    before = edge.series()
    async with grpc.aio.insecure_channel(edge.address) as ch:
        with stopped(mesh.tritons["west-cheap"]):
            seen = await stream(ch, timeout=5)
    assert (seen.status, seen.trailers.get("x-served-by"), seen.attempts) == (
        "OK", "east-fast/generate-small", 2), seen
    await eventually(lambda: pick(delta(edge.series(), before),
                                  "switchyard_edge_calls_total") == 1, 10, "the stream counted")
    d = delta(edge.series(), before)
    check_calls(d, [seen])
    given_up = sum(json.loads(line)["streams"] for line in edge.lines()
                   if '"streams_given_up"' in line)
    assert pick(d, "switchyard_edge_streams_given_up_total", backend="west-cheap") == 1
    assert pick(edge.series(), "switchyard_edge_streams_given_up_total") == given_up == 1


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def envoy_mesh(cfg: MeshConfig, tritons: dict[str, Any],
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    """An Envoy edge with its slow path and its own placement, on the module's Tritons."""
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy")) as m:
        yield m


async def test_envoy_requests_are_counted_once_by_the_path_that_answered(
        envoy_mesh: EnvoyMesh) -> None:
    """Placement's ``switchyard_envoy_requests_total{edge,path}`` against what each caller
    saw (the ``x-switchyard-path`` trailer) and Envoy's own request count; the slow path's
    ``switchyard_edge_calls_total`` counts exactly the calls Envoy sent it."""
    m = envoy_mesh
    feedback = m.placement.ads.feedback if m.placement.ads is not None else None
    assert feedback is not None
    registry = m.placement.service.metrics.registry
    # the slow path's switchyard_edge_calls_total (its AccessLog holds the counter)
    slow_calls = m.slow.router.on_done.__self__.calls  # type: ignore[attr-defined]

    def slow_total() -> float:
        return float(sum(s.value for f in slow_calls.collect() for s in f.samples
                         if s.name == "switchyard_edge_calls_total"))

    def by_path() -> dict[str, float]:
        return {p: registry.get_sample_value("switchyard_envoy_requests_total",
                                             {"edge": m.envoy.node.edge_id, "path": p}) or 0.0
                for p in ("envoy", "slow", "local")}

    def all_logged() -> bool:  # every request Envoy finished has reached placement's log
        return sum(by_path().values()) == m.envoy_stat("http.switchyard.downstream_rq_total")

    await eventually(all_logged, 20, "Envoy's log caught up")
    # the slow path's WatchRoutes and Envoy's ADS stream both watch the route tables
    assert registry.get_sample_value("switchyard_placement_watchers") == 2
    before, slow_before = by_path(), slow_total()
    seen: list[tuple[str, str]] = []  # (status, path) as each caller saw them
    async with m.channel() as ch:
        for md, raw in [*([((), None)] * 5), *([([("x-min-quality", "0.8")], None)] * 2),
                        ([("x-slo-ms", "fast")], None), ([], request_bytes("no-such-model")),
                        ([("x-max-cost-usd", "0")], None)]:
            code, trailers, _ = await raw_infer(ch, md, raw)
            # Envoy's own (local) replies name no path (README, "Trailers")
            seen.append((code.name, trailers.get("x-switchyard-path", "local")))
    paths = collections.Counter(p for _, p in seen)
    assert paths == {"envoy": 5, "slow": 3, "local": 2}, seen
    await eventually(lambda: sum(by_path().values()) - sum(before.values()) == len(seen), 20,
                     "Envoy logged every call")
    after = by_path()
    got = {p: after[p] - before[p] for p in after if after[p] - before[p]}
    assert got == dict(paths), (got, seen)
    assert all_logged()
    assert slow_total() - slow_before == paths["slow"], seen


async def test_a_backend_killed_under_load(mesh: Mesh, edge: Edge) -> None:
    """Calls through a backend killed mid-load: each counted once as its caller saw it,
    every attempt (retries included) counted, and each ejection once as logged."""
    await ready(edge)
    before = edge.series()
    probe = await asyncio.to_thread(served, edge.address, [("x-slo-ms", "2000")])
    backend = probe.trailers["x-served-by"].split("/", 1)[0]
    seen: list[Seen] = [probe]
    stop = asyncio.Event()

    async def load(ch: grpc.aio.Channel) -> None:
        while not stop.is_set():
            seen.append(await unary(ch, [("x-slo-ms", "2000")]))

    async with grpc.aio.insecure_channel(edge.address) as ch:
        workers = [asyncio.create_task(load(ch)) for _ in range(4)]
        await eventually(lambda: len(seen) >= 8, 20, "load is running")
        mesh.tritons[backend].kill()
        n = len(seen)
        await eventually(lambda: len(seen) >= n + 30, 30, "calls after the kill")
        stop.set()
        await asyncio.gather(*workers)
    retried = [s for s in seen if s.attempts > 1]
    assert retried, "no call was retried after the kill"
    await eventually(lambda: pick(delta(edge.series(), before),
                                  "switchyard_edge_calls_total") == len(seen), 10,
                     "every call counted")
    d = delta(edge.series(), before)
    check_calls(d, seen)
    # Each ejection counted once, as logged: a deployment's, and a whole backend's (before,
    # a backend's was logged only: the kill ejected the backend and /metrics said nothing).
    logged = collections.Counter(json.loads(line)["event"] for line in edge.lines()
                                 if "_ejected\"" in line)
    after = edge.series()
    assert logged["backend_ejected"] + logged["deployment_ejected"] > 0, logged
    assert pick(after, "switchyard_edge_ejections_total") == logged["deployment_ejected"]
    assert pick(after, "switchyard_edge_backend_ejections_total", backend=backend
                ) == pick(after, "switchyard_edge_backend_ejections_total"
                          ) == logged["backend_ejected"], logged


async def test_every_log_line_is_one_json_object_with_its_fields(mesh: Mesh, edge: Edge
                                                                  ) -> None:
    """Last: stops the edge process (SIGTERM, as an operator does) and reads all it wrote."""
    await ready(edge)  # its SIGHUP handler is set once it listens
    # An operator's error path: SIGHUP with a broken file (the old policies are kept).
    edge.config.write_text(edge.config.read_text() + "[security\n")
    edge.proc.send_signal(signal.SIGHUP)
    await eventually(lambda: "reload refused" in edge.log.read_text(), 10, "the reload refused")
    total = pick(edge.series(), "switchyard_edge_calls_total")
    edge.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(edge.proc.wait, 20) == 0, edge.log.read_text()[-3000:]
    # placement's watchers gauge back to the one edge left (edge-east)
    await eventually(lambda: pick(placement_series(mesh), "switchyard_placement_watchers") == 1,
                     10, "the edge's watch is gone")
    events = []
    for line in edge.lines():
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"not one JSON object: {line[:300]!r}")
        assert isinstance(event, dict) and set(event) >= LOG_FIELDS, line[:300]
        events.append(event)
    # The workload's faults are callers' and backends', none the edge's: nothing it logged
    # is an error (a stream drain's unretrieved task exception was, asyncio's)
    assert not [e for e in events if e["level"] in ("error", "critical")], [
        e for e in events if e["level"] in ("error", "critical")]
    calls = [e for e in events if e["event"] == "call"]
    assert len(calls) == total
    for c in calls:
        assert set(c) >= CALL_FIELDS, c
    # Each call event says what its caller was told: status, attempts, and for a served
    # call the deployment and cost (x-cost-usd, 0 when none was told).
    checked = 0
    for c in calls:
        seen = CALLERS.get(c["request_id"])
        if seen is None or seen.status == "CANCELLED":  # the caller stopped listening
            continue
        checked += 1
        tr = seen.trailers
        assert (c["status"], c["attempts"]) == (seen.status, seen.attempts), (c, seen)
        if seen.status == "OK":
            assert c["deployment"] == tr["x-served-by"], (c, seen)
        assert c["cost_usd"] == pytest.approx(float(tr.get("x-cost-usd", 0)), abs=1e-10), (
            c, seen)
    assert checked >= 1000, checked
    assert {"edge_listening", "policies_reload_refused"} <= {e["event"] for e in events}


# -- the log writers and the status rule on their own (no mesh) -------------------------

async def test_a_cancel_at_the_callers_deadline_is_its_deadline() -> None:
    """The caller's timer fires a little before the edge's deadline, so the edge hears a
    cancel: within ``DEADLINE_SLACK_S`` of the deadline it is counted DEADLINE_EXCEEDED (a
    stream was counted CANCELLED 5 ms before its 10 s deadline, its caller saw
    DEADLINE_EXCEEDED); earlier it is the caller's cancel."""
    from placement.attempts import AttemptPolicy, AttemptSettings
    from services.edge.router import status_name

    tries = AttemptPolicy(AttemptSettings()).start(10.0)
    assert status_name(asyncio.CancelledError(), tries, 9.995) == "DEADLINE_EXCEEDED"
    assert status_name(asyncio.CancelledError(), tries, 9.0) == "CANCELLED"


async def test_the_access_logs_dropped_line_has_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its buffer the access log drops lines and says how many, as a line like the
    others (it had no ``timestamp`` or ``logger``)."""
    import io

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from services.edge import accesslog
    from services.edge.router import CallRecord

    monkeypatch.setattr(accesslog, "MAX_BUFFER", 2)
    r = CollectorRegistry()
    out = io.StringIO()
    log = accesslog.AccessLog(Counter("c", "", ["model", "deployment", "status"], registry=r),
                              Histogram("h", "", ["model"], registry=r),
                              Counter("a", "", ["model"], registry=r), out=out)
    for i in range(3):
        log.done(CallRecord(f"r{i}", "m", status="NOT_FOUND"))
    log.flush()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["call", "call", "access_log_dropped"]
    assert all(set(e) >= LOG_FIELDS for e in events), events


async def test_library_logging_is_json_too() -> None:
    """What gRPC or asyncio log through ``logging`` in a configured process (an error with
    its traceback included) is a JSON line with the same fields, as structlog's are."""
    script = """
import logging, structlog
from services import logs
logs.configure()
structlog.get_logger("switchyard.edge").info("edge_listening", port=1)
structlog.get_logger().warning("nameless")
try:
    raise RuntimeError("boom")
except RuntimeError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
logging.getLogger("grpc._cython.cygrpc").warning("Unexpected %s", "error")
"""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], check=False, capture_output=True,
        text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["event"], e["logger"]) for e in events] == [
        ("edge_listening", "switchyard.edge"), ("nameless", "switchyard"),
        ("Task exception was never retrieved", "asyncio"),
        ("Unexpected error", "grpc._cython.cygrpc")], events
    assert all(set(e) >= LOG_FIELDS for e in events), events
    assert "RuntimeError: boom" in events[2]["exception"]
