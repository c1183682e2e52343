"""Active gRPC health checks in a real Envoy (issue 12 item 4), against a real Triton and
backends that hang, with the clusters placement pushes (``services/xds/clusters.py``, as a
static bootstrap: ``tests/envoy_static.py``).

A hung backend here is either a socket that listens and never answers (what a stopped
process or a wedged server looks like to Envoy: connections open, no HTTP/2 answer, no
reset) or an EMULATED gRPC server whose health service stops answering when told to. Outlier
detection alone only sees each call's per-try timeout, so before, the first calls of every
route that named a hung deployment first each spent an attempt on it. Now Envoy's own checks
(Triton serves ``grpc.health.v1``) mark it unhealthy without a call, and calls start at the
next deployment.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from benchmarks import envoy_configs as ec
from benchmarks._fleet import Fleet
from services.xds import resources
from tests.envoy_static import StaticEdge
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

HUNG = f"{ec.BACKEND}-hung/{ec.VARIANT}"
HEALTH = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as f:
        f.start_triton()
        yield f


@pytest.fixture
def hung() -> Iterator[str]:
    """An address that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"


class FakePausableBackend:
    """EMULATED backend: a gRPC server answering health checks SERVING, or never while
    ``paused`` (its handlers block until it is resumed); counts the checks."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.running.set()
        self.checks = 0

        def check(_req: bytes, _ctx: Any) -> bytes:
            self.checks += 1
            self.running.wait()
            return b"\x08\x01"  # HealthCheckResponse: SERVING

        def refuse(_req: bytes, ctx: grpc.ServicerContext) -> bytes:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "no calls expected here")
            raise AssertionError  # abort raises

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
                return grpc.unary_unary_rpc_method_handler(
                    check if details.method == HEALTH else refuse)

        self.server = grpc.server(ThreadPoolExecutor(16))
        self.server.add_generic_rpc_handlers([Handler()])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.running.set()
        self.server.stop(0)


@pytest.fixture
def pausable() -> Iterator[FakePausableBackend]:
    p = FakePausableBackend()
    try:
        yield p
    finally:
        p.close()


def health(edge: StaticEdge) -> dict[str, list[str]]:
    """Deployment cluster -> its host's health flags, from Envoy's admin (``[]``: healthy)."""
    text = edge.admin("/clusters?format=json")
    out: dict[str, list[str]] = {}
    for c in json.loads(text or "{}").get("cluster_statuses", []):
        for h in c.get("host_statuses", []):
            status = h.get("health_status", {})
            out[c["name"]] = sorted(k for k, v in status.items()
                                    if k != "eds_health_status" and v is True)
    return out


def test_a_backend_that_never_answers_is_found_by_envoys_checks_before_any_call(
        fleet: Fleet, hung: str) -> None:
    edge = StaticEdge(fleet, (HUNG, ec.DEPLOYMENT), endpoints={HUNG: hung})
    hung_cluster = resources.cluster_name(HUNG)
    eventually_sync(lambda: "failed_active_health_check" in health(edge).get(hung_cluster, []),
                    15, "Envoy's active check marks the hung backend unhealthy")
    # the real Triton answers Envoy's gRPC health check: healthy
    eventually_sync(lambda: health(edge).get(resources.cluster_name(ec.DEPLOYMENT)) == [],
                    15, "Triton passes Envoy's gRPC health check")
    for _ in range(5):
        model_name, trailers = edge.call()
        assert model_name == ec.VARIANT and trailers["x-served-by"] == ec.DEPLOYMENT
        assert trailers["x-attempts"] == "1", trailers  # no attempt spent on the hung one
    assert edge.stat("upstream_rq_retry") == 0


def test_a_backend_that_stops_answering_later_is_found_and_comes_back_when_it_answers(
        fleet: Fleet, pausable: FakePausableBackend) -> None:
    """Healthy at first (a standby: the second of the order, checked at the no-traffic
    interval), then its health service hangs: Envoy's checks time out and mark it
    unhealthy without any call; answering again, it is healthy again."""
    edge = StaticEdge(fleet, (ec.DEPLOYMENT, HUNG), endpoints={HUNG: pausable.address})
    hung_cluster = resources.cluster_name(HUNG)
    eventually_sync(lambda: health(edge).get(hung_cluster) == [], 15,
                    "the emulated backend passes its first check")
    pausable.running.clear()
    eventually_sync(lambda: "failed_active_health_check" in health(edge).get(hung_cluster, []),
                    60, "Envoy's checks time out and mark the backend unhealthy")
    failures = [int(line.rsplit(": ", 1)[1])
                for line in (edge.admin("/stats?filter=health_check.failure$") or "").splitlines()
                if "-hung" in line]
    assert failures and failures[0] > 0, failures  # the checks' own verdict, not a call's
    _, trailers = edge.call()  # the order's first, healthy: unaffected
    assert trailers["x-served-by"] == ec.DEPLOYMENT and trailers["x-attempts"] == "1"
    pausable.running.set()
    eventually_sync(lambda: health(edge).get(hung_cluster) == [], 60,
                    "answering again, the backend is healthy again")
