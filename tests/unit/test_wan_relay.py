"""The EMULATED WAN relay: route computation from config, and the delay line on loopback sockets."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from placement.errors import ConfigError
from services.backends.wan import RelayRoute, WanRelay, dial_address, relay_routes, rtt_ms
from services.config import MeshConfig, load_config

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"


@pytest.fixture
def example() -> MeshConfig:
    return load_config(EXAMPLE)


def test_relay_routes_of_the_example_mesh(example: MeshConfig) -> None:
    got = [(r.edge_region, r.backend_id, r.listen_port, r.target, r.one_way_ms)
           for r in relay_routes(example)]
    assert got == [
        ("aws-us-east-1", "euw4-a100", 52000, "127.0.0.1:8105", 44.0),
        ("aws-us-east-1", "usc1-l4", 52001, "127.0.0.1:8104", 15.0),
        ("aws-us-east-1", "usw2-l4", 52002, "127.0.0.1:8103", 32.0),
        ("gcp-europe-west4", "usc1-l4", 52003, "127.0.0.1:8104", 52.0),
        ("gcp-europe-west4", "use1-h100", 52004, "127.0.0.1:8101", 44.0),
        ("gcp-europe-west4", "use1-t4", 52005, "127.0.0.1:8102", 44.0),
        ("gcp-europe-west4", "usw2-l4", 52006, "127.0.0.1:8103", 70.0),
    ]


def test_dial_address_uses_relay_only_across_regions(example: MeshConfig) -> None:
    by_id = {b.id: b for b in example.backends}
    assert dial_address(example, "aws-us-east-1", by_id["use1-t4"]) == "127.0.0.1:8102"
    assert dial_address(example, "aws-us-east-1", by_id["usw2-l4"]) == "127.0.0.1:52002"


def test_no_routes_when_emulation_is_off(example: MeshConfig) -> None:
    off = example.model_copy(update={"wan": example.wan.model_copy(update={"emulate": False})})
    assert relay_routes(off) == []


def test_rtt_is_symmetric_and_missing_pairs_are_named(example: MeshConfig) -> None:
    assert rtt_ms(example, "gcp-europe-west4", "aws-us-east-1") == 88
    assert rtt_ms(example, "aws-us-east-1", "aws-us-east-1") == 0
    no_rtt = example.model_copy(update={"rtt": []})
    with pytest.raises(ConfigError, match="aws-us-east-1"):
        relay_routes(no_rtt)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo with timestamps: answers each chunk at once, then half-closes after EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def test_bytes_pass_intact_both_ways_with_half_close(echo_port: int) -> None:
    route = RelayRoute("e", "b", 0, f"127.0.0.1:{echo_port}", one_way_ms=5)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with WanRelay([route]) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port_of(route))

        async def send() -> None:
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i:i + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        echoed = await asyncio.wait_for(reader.read(), timeout=20)  # read() = until EOF
        await sender
        writer.close()
    assert echoed == payload


ONE_WAY_MS = 250.0
GAP_MS = 10.0


async def test_delay_line_is_pipelined_not_serial(echo_port: int) -> None:
    """10 chunks ``GAP_MS`` apart through ``ONE_WAY_MS`` each way: each comes back
    ``2 x ONE_WAY_MS`` after it was sent. A serial line (one chunk's delay, then the next
    read) holds the second chunk behind the first's: at best ``3 x ONE_WAY_MS - GAP_MS`` even
    when it reads the later chunks together. The bound is that best case, so a loaded host
    has ``ONE_WAY_MS - GAP_MS`` of scheduling delay before a pipelined line fails it."""
    route = RelayRoute("e", "b", 0, f"127.0.0.1:{echo_port}", one_way_ms=ONE_WAY_MS)
    async with WanRelay([route]) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port_of(route))
        sent: list[float] = []
        arrived: list[float] = []
        for i in range(10):
            sent.append(time.perf_counter())
            writer.write(bytes([i]) * 10)
            await writer.drain()
            await asyncio.sleep(GAP_MS / 1000)  # pacing: the chunks' send gap, not a wait
        for i in range(10):
            chunk = await asyncio.wait_for(reader.readexactly(10), timeout=5)
            arrived.append(time.perf_counter())
            assert chunk == bytes([i]) * 10
        writer.close()
    delays_ms = [(a - s) * 1000 for s, a in zip(sent, arrived, strict=True)]
    assert min(delays_ms) >= 2 * ONE_WAY_MS - 1, delays_ms  # the delay itself: load adds
    assert max(delays_ms) < 3 * ONE_WAY_MS - GAP_MS, delays_ms


async def test_unreachable_target_closes_the_client_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    route = RelayRoute("e", "b", 0, f"127.0.0.1:{dead_port}", one_way_ms=1)
    async with WanRelay([route]) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port_of(route))
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()


async def test_stop_cuts_open_connections(echo_port: int) -> None:
    route = RelayRoute("e", "b", 0, f"127.0.0.1:{echo_port}", one_way_ms=1)
    relay = WanRelay([route])
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port_of(route))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), timeout=5) == b"ping"
    await asyncio.wait_for(relay.stop(), timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
