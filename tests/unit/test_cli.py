"""``switchyard`` status / explain / drain against a real placement server: true errors, units."""

from __future__ import annotations

import asyncio
import pathlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from placement.errors import InvalidHint
from placement.registry import PROFILES
from services import cli
from services.api.switchyard.v1 import placement_pb2_grpc, telemetry_pb2
from services.drills.sandbox import dumps_toml
from services.edge import hints
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import mesh_config

GIB = 1024 ** 3


@dataclass
class Placement:
    address: str
    config: str
    service: PlacementService

    async def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        """``switchyard ARGV --config … --placement …`` in a thread (the server runs here)."""
        args = [*argv, "--config", self.config]
        if argv[0] != "certs":
            args += ["--placement", self.address]
        code = await asyncio.to_thread(cli.main, args)
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` configures process-wide logging onto the (captured) stderr: not in tests."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


@pytest_asyncio.fixture
async def placement(tmp_path: pathlib.Path) -> AsyncIterator[Placement]:
    cfg = mesh_config(tmp_path)
    path = tmp_path / "mesh.toml"
    path.write_text(dumps_toml(cfg.model_dump(mode="json", exclude_none=True)))
    service = build_service(cfg, preregister=True)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Placement(f"127.0.0.1:{port}", str(path), service)
    await server.stop(0)


async def test_unknown_backend_is_not_found_not_mesh_down(
        placement: Placement, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await placement.run(capsys, "drain", "backend", "no-such-backend")
    assert code == 3
    assert f"placement at {placement.address} answered NOT_FOUND" in err
    assert "no registered backend has backend 'no-such-backend'" in err
    assert "next: `switchyard status` lists the backends" in err
    assert "mesh running" not in err


async def test_unknown_model_is_not_found_with_the_known_ones(
        placement: Placement, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await placement.run(capsys, "explain", "no-such-model", "--region", "r-east")
    assert code == 3 and "answered NOT_FOUND" in err
    assert "model 'no-such-model' is not in the catalog (known: generate, summarize)" in err
    assert "mesh running" not in err


async def test_placement_not_listening_says_so(tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = mesh_config(tmp_path)
    path = tmp_path / "mesh.toml"
    path.write_text(dumps_toml(cfg.model_dump(mode="json", exclude_none=True)))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = await asyncio.to_thread(cli.main, ["status", "--config", str(path), "--placement",
                                              f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 3
    assert f"cannot reach placement at 127.0.0.1:{port} (UNAVAILABLE" in err
    assert f"is the mesh running? Start it with `switchyard up --config {path}`" in err


BAD_FLAGS = [("--slo-ms", "abc", "x-slo-ms"), ("--slo-ms", "-5", "x-slo-ms"),
             ("--min-quality", "1.5", "x-min-quality"), ("--max-cost-usd", "-1", "x-max-cost-usd"),
             ("--allowed-regions", "r-east,mars", "x-allowed-regions"),
             ("--allowed-regions", ",", "x-allowed-regions"),
             ("--profile", "slowest", "x-routing-profile")]


@pytest.mark.parametrize(("flag", "value", "header"), BAD_FLAGS)
async def test_explain_flags_are_validated_as_the_edge_validates_hints(
        placement: Placement, capsys: pytest.CaptureFixture[str], flag: str, value: str,
        header: str) -> None:
    with pytest.raises(InvalidHint) as edge:
        hints.parse([(header, value)], frozenset({"r-east", "r-west", "r-central"}), PROFILES)
    code, _, err = await placement.run(capsys, "explain", "summarize", flag, value)
    assert code == 2
    assert edge.value.message in err  # the edge's own words
    assert f"(flag {flag})" in err


async def test_explain_repeated_flags_that_disagree_are_refused_as_by_the_edge(
        placement: Placement, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await placement.run(capsys, "explain", "summarize", "--min-quality", "0.9",
                                       "--min-quality", "0.1")
    assert code == 2
    assert "x-min-quality='0.1': contradicts an earlier x-min-quality='0.9'" in err
    assert "(flag --min-quality)" in err
    code, _, _ = await placement.run(capsys, "explain", "summarize", "--min-quality", "0.9",
                                     "--min-quality", "0.90")
    assert code == 0  # the same value twice is fine, as at the edge


async def test_explain_flags_reach_placement(placement: Placement,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await placement.run(capsys, "explain", "summarize", "--region", "r-east",
                                       "--slo-ms", "1000", "--profile", "fastest")
    assert code == 0
    assert "SLO 1000 ms, profile fastest" in out and "picks east-fast/" in out
    code, out, _ = await placement.run(capsys, "explain", "summarize", "--region", "r-east",
                                       "--slo-ms", "1000", "--max-cost-usd", "0")
    assert code == 0
    assert "picks" not in out and "cost-cap" in out  # 0 is a real cap: nothing is free
    code, out, _ = await placement.run(capsys, "explain", "summarize", "--region", "r-east",
                                       "--min-quality", "0.8", "--allowed-regions", "r-east")
    assert code == 0 and "quality: " in out and "residency: " in out


async def test_status_shows_gpu_readings_with_units_owner_and_legend(
        placement: Placement, capsys: pytest.CaptureFixture[str]) -> None:
    async def reports():  # type: ignore[no-untyped-def]
        yield telemetry_pb2.TelemetryReport(
            backend_id="east-fast", agent_id="agent-node1",
            source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED, backend_ready=True,
            gpus=[telemetry_pb2.GpuReading(
                index=0, name="H100 (simulated)", gpu_util_pct=63.0, mem_used_bytes=30 * GIB,
                mem_total_bytes=80 * GIB, temperature_c=61.0, power_w=412.0,
                power_limit_w=700.0, throttle_reasons=0x4 | 0x20,
                ecc_uncorrected_volatile=0, xid_events=[79])])

    async with grpc.aio.insecure_channel(placement.address) as ch:
        await placement_pb2_grpc.PlacementStub(ch).StreamTelemetry(reports(), timeout=5)
    code, out, _ = await placement.run(capsys, "status")
    assert code == 0
    for header in ("util %", "mem used / total GiB", "temp °C", "power W / limit W",
                   "clock events (! = slowdown)", "errors", "source", "telemetry owner"):
        assert header in out
    row = next(line for line in out.splitlines() if "H100 (simulated)" in line)
    for cell in ("63", "30.0 / 80.0", "61", "412 / 700", "SwPowerCap,SwThermalSlowdown!",
                 "ECC uncorr 0; XID 79", "simulated"):
        assert cell in row, (cell, row)
    assert "agent-node1 @ ipv4:127.0.0.1:" in out
    for column in ("rtt ms", "compute ms", "edge slots"):
        assert f"  {column}  " in out  # a legend line explains each column


def test_status_help_explains_the_columns(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["status", "--help"])
    out = capsys.readouterr().out
    assert "edge slots  share / concurrency" in out and "rtt ms" in out
    assert "compute ms  Triton's own compute time" in out
