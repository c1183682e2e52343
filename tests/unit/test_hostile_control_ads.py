"""A hostile Envoy against placement's ADS server (real server on 127.0.0.1): a node whose
region or listener metadata is impossible gets INVALID_ARGUMENT naming the field (not
UNKNOWN from an unhandled int(NaN)), a NACK flood keeps the stream's memory bounded, and a
well-behaved Envoy keeps getting its config."""

from __future__ import annotations

import asyncio
import math
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from placement.registry import build_profile
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.xds.envoy_types import CLUSTER, LISTENER
from services.xds.resources import EnvoySettings
from services.xds.server import AdsServer, add_ads
from services.xds.session import NACKS_KEPT
from tests.mesh_harness import eventually, mesh_config

Ads = tuple[AdsServer, ads_pb2_grpc.AggregatedDiscoveryServiceStub, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ads(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ads]:
    service = build_service(mesh_config(pathlib.Path(tmp_path_factory.mktemp("ads"))),
                            preregister=True)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    served = add_ads(server, service.hub, build_profile("cheapest"), EnvoySettings())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield served, ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch), service.hub.regions[0]
    await server.stop(0)


def _request(region: str, **metadata: float | str) -> discovery_pb2.DiscoveryRequest:
    md = struct_pb2.Struct()
    md.update(metadata)
    return discovery_pb2.DiscoveryRequest(
        node=base_pb2.Node(id="envoy-h", cluster=region, metadata=md), type_url=CLUSTER)


async def _clusters(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, region: str) -> int:
    call = stub.StreamAggregatedResources(iter([_request(region, listen_port=9000)]),
                                          timeout=10)
    resp = await call.read()
    call.cancel()
    assert resp is not grpc.aio.EOF and resp.type_url == CLUSTER
    return len(resp.resources)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("region", "metadata", "says"), [
    (None, {"listen_port": math.nan}, "metadata.listen_port nan is not a port"),
    (None, {"listen_port": math.inf}, "metadata.listen_port inf is not a port"),
    (None, {"listen_port": -5}, "metadata.listen_port -5.0 is not a port"),
    (None, {"listen_port": 70000}, "metadata.listen_port 70000.0 is not a port"),
    (None, {"listen_port": 9000.5}, "metadata.listen_port 9000.5 is not a port"),
    (None, {"listen_port": 9000, "slow_path_port": math.nan},
     "metadata.slow_path_port nan is not a port"),
    (None, {"listen_port": 9000, "listen_host": "a b;{}"},
     "metadata.listen_host 'a b;{}' is not an IP address"),
    ("atlantis", {"listen_port": 9000}, "edge_region 'atlantis' is not a region"),
    ("", {"listen_port": 9000}, "must set cluster"),
])
async def test_an_impossible_node_is_invalid_argument_naming_the_field(
        ads: Ads, region: str | None, metadata: dict[str, float | str], says: str) -> None:
    served, stub, good = ads
    before = await _clusters(stub, good)
    call = stub.StreamAggregatedResources(iter([_request(good if region is None else region,
                                                         **metadata)]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert says in (err.value.details() or "")
    assert await _clusters(stub, good) == before  # and the others are served as before
    assert "atlantis" not in served.hub.regions  # type: ignore[attr-defined]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_nack_flood_keeps_the_stream_bounded_and_served(ads: Ads) -> None:
    served, stub, region = ads
    queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
    await queue.put(_request(region, listen_port=9001))

    async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (req := await queue.get()) is not None:
            yield req

    call = stub.StreamAggregatedResources(requests(), timeout=30)
    first = await call.read()
    assert first is not grpc.aio.EOF and first.type_url == CLUSTER
    ack = _request(region, listen_port=9001)
    ack.response_nonce, ack.version_info = first.nonce, first.version_info
    await queue.put(ack)  # the clusters taken: nothing waits for them to warm
    flood = 500
    for i in range(flood):
        nack = _request(region, listen_port=9001)
        nack.response_nonce = f"n{i}"
        nack.error_detail.CopyFrom(status_pb2.Status(code=3, message="x" * 10_000))
        await queue.put(nack)
    await queue.put(discovery_pb2.DiscoveryRequest(type_url=LISTENER))  # a new type: answered
    listener = await call.read()
    assert listener is not grpc.aio.EOF

    def flooded() -> bool:
        return any(s.replies.nack_count >= flood for s in served.sessions)

    await eventually(flooded, 20, "every NACK recorded")
    session = next(s for s in served.sessions if s.replies.nack_count >= flood)
    assert len(session.replies.nacks) == NACKS_KEPT
    assert all(len(n.message) <= 4096 for n in session.replies.nacks)
    await queue.put(None)
    call.cancel()
    assert await _clusters(stub, region) > 0
