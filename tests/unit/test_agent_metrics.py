"""The node agent's /metrics (``services/agent/metrics.py``) against a real placement service
on 127.0.0.1: every series read over HTTP as Prometheus would, each against what happened
(registrations ok and refused, heartbeats sent, then failed when placement stops, reports
written, NVML errors, replicas connected). Triton is the FakeStats stand-in of
``test_agent.py``; the GPUs the fake pynvml."""

from __future__ import annotations

import asyncio
import pathlib
import random
import subprocess
import sys
import urllib.request

import grpc
import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.agent.agent import NodeAgent
from services.agent.fake_nvml import FakeNvml
from services.agent.metrics import serve_metrics
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.security.authz import interceptors
from services.security.settings import SecuritySettings
from tests.mesh_harness import eventually, mesh_config
from tests.unit.test_agent import FakeStats

ROOT = pathlib.Path(__file__).parents[2]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def _series(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return await asyncio.to_thread(_scrape, port)


def _v(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
       outcome: str | None = None) -> float:
    return got[(name, (("outcome", outcome),) if outcome else ())]


@pytest.mark.asyncio
async def test_agent_metrics_count_what_happened(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    service = build_service(cfg, preregister=False)
    server = grpc.aio.server(interceptors=[*interceptors(SecuritySettings(plaintext=True)),
                                           ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ids = [b.id for b in cfg.backends][:2]
    nvml = FakeNvml(2)
    nvml.gpus[1].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_UNKNOWN
    # another process holds the second id at another endpoint: the agent is refused
    held = next(b for b in cfg.backends if b.id == ids[1])
    from services.agent.agent import backend_message

    stranger = backend_message(cfg, held)
    stranger.endpoint = "127.0.0.1:1"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = placement_pb2_grpc.PlacementStub(ch)
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=stranger),
                                   timeout=5)
        agent = NodeAgent(cfg, ids, placement=[f"127.0.0.1:{port}"], nvml=nvml,
                          stats_factory=lambda b: FakeStats(b.variants), interval_s=0.05,
                          rng=random.Random(3), agent_id="agent-m", initial_backoff_s=0.05,
                          max_backoff_s=0.2, fan_out=True)
        http, mport = serve_metrics(agent, 0)
        try:
            await agent.start()
            await eventually(lambda: agent.counts.registrations["refused"] >= 1, 10,
                             "the agent refused for the held id")
            got = await _series(mport)
            assert _v(got, "switchyard_agent_registrations_total", "refused") >= 1
            assert _v(got, "switchyard_agent_heartbeats_total", "sent") == 0
            assert _v(got, "switchyard_agent_connected_replicas") == 0
            assert _v(got, "switchyard_agent_simulated") == 0  # the fake NVML is up
            await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
                backend_id=ids[1]), timeout=5)  # the holder leaves: the agent gets in
            await eventually(lambda: agent.counts.heartbeats["sent"] >= 3, 15,
                             "three rounds sent")
            got = await _series(mport)
            refused = _v(got, "switchyard_agent_registrations_total", "refused")
            assert _v(got, "switchyard_agent_registrations_total", "ok") >= 2
            assert _v(got, "switchyard_agent_heartbeats_total", "sent") >= 3
            assert _v(got, "switchyard_agent_telemetry_reports_total") >= 2 * 3
            assert _v(got, "switchyard_agent_telemetry_reports_total") <= agent.reports_sent
            assert _v(got, "switchyard_agent_connected_replicas") == 1
            assert _v(got, "switchyard_agent_nvml_errors_total") >= 1  # GPU 1's power read
            assert service.ingest.owners.owner(ids[1])  # placement has its telemetry
            await server.stop(0)  # placement goes away: the stream breaks, reconnects fail
            await eventually(lambda: agent.counts.registrations["failed"] >= 1, 15,
                             "a registration failing while placement is down")
            got = await _series(mport)
            assert _v(got, "switchyard_agent_heartbeats_total", "failed") >= 1
            assert _v(got, "switchyard_agent_registrations_total", "failed") >= 1
            assert _v(got, "switchyard_agent_registrations_total", "refused") == refused
            assert _v(got, "switchyard_agent_connected_replicas") == 0
            labels = {k[1] for k in got if k[0].startswith("switchyard_agent_")}
            assert labels <= {(), *((("outcome", o),) for o in
                                    ("ok", "refused", "failed", "sent"))}
        finally:
            await agent.stop()
            http.shutdown()
            await server.stop(0)


def test_agent_help_names_the_metrics_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "services.agent", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--metrics-port PORT" in out and "--metrics-host HOST" in out
    assert "127.0.0.1" in out
