"""Hostile caller, round 8 (hostile8's findings rooted in the Envoy edge's listener: the C
module, native/, and its Lua twin, services/xds/): the same call gets the same status on both
engines, and a caller's own bad metadata reaches no backend. Each test runs on an Envoy given
the module and on one given the Lua (``[edge] envoy_filters``), its slow path (the co-located
Python edge, called directly) as *the Python edge*; real Tritons, placement over ADS, raw
HTTP/2 callers (h2), since gRPC clients send none of these.

- A ModelInfer carrying two gRPC messages: gRPC (Triton, the Python edge) serves the first.
  Before, the listener appended the first variant's name after the whole body (the second
  message's prefix inside the first): INVALID_ARGUMENT "... (the deployment answered: Unable
  to parse request)".
- A ModelInfer without ``te: trailers``: the Python edge's gRPC resets it before any backend.
  Before, the listener forwarded it and Triton answered UNKNOWN "Missing :te header", a
  backend's failure in Envoy's outlier view and in the access log placement learns from. Now
  INVALID_ARGUMENT naming te at the listener, as for a missing content-type (734254b).
- A malformed ``grpc-timeout``: gRPC answers INTERNAL "Error parsing 'grpc-timeout' metadata".
  Before, the listener served it with no deadline (the route removes grpc-timeout): the
  caller's deadline silently dropped.
"""
from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Sequence

import h2.config
import h2.connection
import h2.events
import pytest
import pytest_asyncio

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.xds import lua
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import INFER_PATH, mesh_config, models_parked, request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("hostile8-native"))


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["module", "lua"])
async def mesh(request: pytest.FixtureRequest, cfg: MeshConfig,
               tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    filters = request.param
    cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(
        update={"envoy_filters": filters})})
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp(f"envoy-{filters}")) as m:
        assert m.envoy.node.module is (filters == "module")
        yield m


def addresses(mesh: EnvoyMesh) -> dict[str, str]:
    return {"python": f"127.0.0.1:{mesh.slow.port}", "envoy": mesh.envoy.address}


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def raw_call(address: str, headers: Sequence[tuple[str, str]], data: bytes,
                   path: str = INFER_PATH) -> tuple[str, str] | str:
    """A call (a ModelInfer unless ``path`` says) sent as these headers (after the
    pseudo-headers) and these DATA bytes with END_STREAM: its first (grpc-status,
    grpc-message), or "reset" for a RST_STREAM."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", path),
                          (":authority", address), *headers])
    conn.send_data(1, data, end_stream=True)
    writer.write(conn.data_to_send())
    try:
        while True:
            got = await asyncio.wait_for(reader.read(65536), 10)
            assert got, "the connection closed with no answer"
            for ev in conn.receive_data(got):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    hs = {str(k): str(v) for k, v in ev.headers or ()}
                    if "grpc-status" in hs:
                        return hs["grpc-status"], urllib.parse.unquote(
                            hs.get("grpc-message", ""))
                elif isinstance(ev, h2.events.StreamReset):
                    return "reset"
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
            writer.write(conn.data_to_send())
    finally:
        writer.close()


def deployment_requests(mesh: EnvoyMesh) -> int:
    return sum(int(line.rpartition(": ")[2]) for line in
               mesh.envoy.admin("/stats?filter=upstream_rq_total$").splitlines()
               if line.startswith("cluster.dep_"))


async def test_a_modelinfer_with_two_messages_is_served_its_first_alike(
        mesh: EnvoyMesh) -> None:
    """Fails on the old listener (both engines): envoy INVALID_ARGUMENT 'Unable to parse'."""
    one = frame(request_bytes())
    got = {name: await raw_call(a, GRPC, one + one) for name, a in addresses(mesh).items()}
    assert got["python"] == ("0", ""), got
    assert got["envoy"] == got["python"], got


async def test_a_modelinfer_without_te_reaches_no_backend(mesh: EnvoyMesh) -> None:
    """gRPC's server resets it (the Python edge's caller: RST_STREAM). Fails on the old
    listener: UNKNOWN 'Missing :te header' from a deployment."""
    no_te = [("content-type", "application/grpc")]
    python = await raw_call(addresses(mesh)["python"], no_te, frame(request_bytes()))
    assert python == "reset", python
    before = deployment_requests(mesh)
    got = await raw_call(mesh.envoy.address, no_te, frame(request_bytes()))
    assert got == ("3", "a call without te: trailers is not gRPC: send te: trailers"), got
    assert deployment_requests(mesh) - before == 0
    # (Envoy's codec resets any other te, closing the connection before any filter, but an
    # upper-case TRAILERS, which it drops: the listener sees te: trailers or none; review9)


@pytest.mark.parametrize("timeout", ["abc", "-1S", "1X", "", "5S5S"])
async def test_a_malformed_grpc_timeout_is_refused_alike(mesh: EnvoyMesh, timeout: str) -> None:
    """Fails on the old listener: served OK with no deadline."""
    before = deployment_requests(mesh)
    got = {name: await raw_call(a, [*GRPC, ("grpc-timeout", timeout)], frame(request_bytes()))
           for name, a in addresses(mesh).items()}
    assert got == {"python": ("13", lua.TIMEOUT_UNREADABLE),
                   "envoy": ("13", lua.TIMEOUT_UNREADABLE)}, got
    assert deployment_requests(mesh) - before == 0


@pytest.mark.parametrize("path", [INFER_PATH, lua.STREAM_PATH])
@pytest.mark.parametrize("timeout", [" 5S ", "1000000001m", "12345678901X", "123456789S"])
async def test_a_grpc_timeout_grpc_reads_is_served_alike(mesh: EnvoyMesh, timeout: str,
                                                         path: str) -> None:
    """Spaces around, over 1,000,000,000 (no deadline), 9 digits: gRPC's core serves each;
    a stream through Envoy on its slow path."""
    got = {name: await raw_call(a, [*GRPC, ("grpc-timeout", timeout)], frame(request_bytes()),
                                path)
           for name, a in addresses(mesh).items()}
    assert got == {"python": ("0", ""), "envoy": ("0", "")}, got


@pytest.mark.parametrize("path", [INFER_PATH, lua.STREAM_PATH])
@pytest.mark.parametrize(("first", "last", "status"), [
    ("1S", "50S", ("0", "")), ("50S", "1S", ("0", "")), ("5S", " 50S", ("0", "")),
    ("1S", "abc", ("13", lua.TIMEOUT_UNREADABLE)),
    ("abc", "1S", ("13", lua.TIMEOUT_UNREADABLE))])
async def test_a_repeated_grpc_timeout_is_read_as_its_last_alike(
        mesh: EnvoyMesh, first: str, last: str, status: tuple[str, str], path: str) -> None:
    """gRPC's core reads every grpc-timeout sent (one it cannot read refuses the call) and
    keeps the last; Envoy's codec joins a repeat into one value ("1S,50S"), which the listener
    refused as unreadable before (review8). Then (review9) it read only the part after the
    last ',' ('abc' then '1S' served) and left the joined value to the slow path's gRPC
    (a stream refused INTERNAL)."""
    got = {name: await raw_call(a, [*GRPC, ("grpc-timeout", first), ("grpc-timeout", last)],
                                frame(request_bytes()), path)
           for name, a in addresses(mesh).items()}
    assert got == {"python": status, "envoy": status}, got


@pytest.mark.parametrize("hint", [("x-allowed-regions", "r-east"), ("x-fail-fast", "1")])
async def test_a_repeated_grpc_timeout_on_the_slow_path_is_served_alike(
        mesh: EnvoyMesh, hint: tuple[str, str]) -> None:
    """A hint compiled config cannot hold sends the call to the slow path, whose gRPC read
    the joined "1S,50S" as unreadable (review9)."""
    hs = [*GRPC, hint, ("grpc-timeout", "1S"), ("grpc-timeout", "50S")]
    got = {name: await raw_call(a, hs, frame(request_bytes()))
           for name, a in addresses(mesh).items()}
    assert got == {"python": ("0", ""), "envoy": ("0", "")}, got


@pytest.mark.parametrize("timeouts", [["200000000n"], ["1S", "2S"]])
async def test_the_deadline_gRPC_reads_is_enforced_alike(
        mesh: EnvoyMesh, cfg: MeshConfig, tritons: dict[str, TritonProcess],
        timeouts: list[str]) -> None:
    """Envoy's router enforces a caller's deadline from its own reading of grpc-timeout: at
    most 8 digits, one value. A 9-digit value (200 ms) or a joined repeat, which gRPC reads,
    went unenforced on the fast path: with every model parking its calls, the Python edge
    answered DEADLINE_EXCEEDED and Envoy nothing at all (review9; fails so on both old
    listeners). Every backend's models are parked only inside the test."""
    hs = [*GRPC, *(("grpc-timeout", t) for t in timeouts)]
    got: dict[str, tuple[str, str] | str] = {}
    async with models_parked(cfg, tritons):
        for name, a in addresses(mesh).items():
            try:
                got[name] = await asyncio.wait_for(raw_call(a, hs, frame(request_bytes())), 8)
            except TimeoutError:
                got[name] = "no answer within 8 s"
    assert {name: g[0] for name, g in got.items()} == {"python": "4", "envoy": "4"}, got
