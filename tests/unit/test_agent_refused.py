"""An agent whose backend id another live agent holds is told so by the real placement
(``services/placement/identity.py``) and says so in its log as a refusal, with what to do,
not as placement being unreachable; it keeps retrying with backoff."""

from __future__ import annotations

import pathlib
from collections.abc import MutableMapping
from typing import Any

import grpc
from structlog.testing import capture_logs

from services.agent.agent import NodeAgent, backend_message
from services.agent.fake_nvml import FakeNvml
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.security.authz import interceptors
from services.security.settings import SecuritySettings
from tests.mesh_harness import eventually, mesh_config
from tests.unit.test_agent import FakeStats


async def test_a_refused_registration_is_logged_as_refused_with_the_holder(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    service = build_service(cfg, preregister=False)
    server = grpc.aio.server(interceptors=[*interceptors(SecuritySettings(plaintext=True)),
                                           ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    backend = cfg.backends[0]
    agent = NodeAgent(cfg, [backend.id], placement=[f"127.0.0.1:{port}"],
                      nvml=FakeNvml(0, init_error=12), agent_id="agent-late",
                      stats_factory=lambda b: FakeStats(b.variants),
                      nvml_retry_s=(3600.0, 3600.0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            held = backend_message(cfg, backend)
            held.endpoint = "127.0.0.1:1"  # another agent's Triton holds the id
            await placement_pb2_grpc.PlacementStub(ch).RegisterBackend(
                placement_pb2.RegisterBackendRequest(backend=held), timeout=5)
        with capture_logs() as logs:
            def refusals() -> list[MutableMapping[str, Any]]:
                return [e for e in logs if e["event"] == "agent.registration_refused"]

            await agent.start()
            await eventually(lambda: bool(refusals()), within_s=10,
                             what="the agent logs its refused registration")
        first = refusals()[0]
        assert first["code"] == "ALREADY_EXISTS"
        assert backend.id in first["details"] and "127.0.0.1:1" in first["details"]
        assert "unique id" in first["action"]
        assert not [e for e in logs if e["event"] == "agent.placement_unreachable"]
    finally:
        await agent.stop()
        await server.stop(0)
