"""An operator's drain on one placement replica reaches every replica (real replicas on
127.0.0.1, ``services/placement/replicate.py``): applied by the peers before the drain
returns, undone from either side, retried to a replica that was down until it answers, never
forwarded twice, and an older change arriving late never undoes a newer one. On the code
before it, the drain reached only the replica it was sent to: an edge watching the other
kept routing to the drained backend (the first test fails there)."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from placement.model import Availability
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.placement import replicate
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_ports
from tests.mesh_harness import eventually, mesh_config

pytestmark = pytest.mark.asyncio
DRAINED = "backend drained by operator"
BACKEND = "east-fast"


def _drain(target: str = BACKEND, availability: int = fleet_pb2.AVAILABILITY_DRAINED
           ) -> placement_pb2.SetAvailabilityRequest:
    return placement_pb2.SetAvailabilityRequest(
        scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=target,
        availability=availability)


async def _set(port: int, request: placement_pb2.SetAvailabilityRequest,
               metadata: tuple[tuple[str, str], ...] = ()
               ) -> placement_pb2.SetAvailabilityResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp: placement_pb2.SetAvailabilityResponse = await placement_pb2_grpc.PlacementStub(
            ch).SetAvailability(request, timeout=10, metadata=metadata)
    return resp


async def _drained_rows(port: int) -> set[str]:
    """The deployments a watching edge is told are drained, from the replica's tables."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        got = await placement_pb2_grpc.PlacementStub(ch).GetRouteTables(
            placement_pb2.GetRouteTablesRequest(edge_region="r-east"), timeout=10)
    return {c.backend_id for t in got.tables for c in t.candidates
            if c.dropped_reason == DRAINED}


def _availability(r: RunningPlacement) -> Availability:
    return r.service.fleet.backends[BACKEND].availability


async def test_a_drain_on_one_replica_is_on_every_replica_when_it_returns(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    pa, pb = free_ports(2)
    a = await start_placement(cfg, port=pa, metrics_port=0, peers=[f"127.0.0.1:{pb}"],
                              learned=tmp_path / "a.json")
    b = await start_placement(cfg, port=pb, metrics_port=0, peers=[f"127.0.0.1:{pa}"],
                              learned=tmp_path / "b.json")
    try:
        resp = await _set(pa, _drain())
        assert list(resp.backend_ids) == [BACKEND]
        # no waiting: the drain returned once every replica that answers applied it
        assert _availability(b) is Availability.DRAINED
        assert await _drained_rows(pb) == {BACKEND} == await _drained_rows(pa)
        # b applied a forwarded change and forwarded nothing back
        assert b.service.fanout is not None
        assert all(p.task is None for p in b.service.fanout.peers)
        await _set(pb, _drain(availability=fleet_pb2.AVAILABILITY_ACTIVE))  # undo on b
        assert _availability(a) is Availability.ACTIVE
        assert await _drained_rows(pa) == set()
        assert a.service.fanout is not None and a.service.fanout.pending == 0
    finally:
        await a.stop(0)
        await b.stop(0)


async def test_a_replica_down_during_a_drain_gets_it_when_it_answers(
        tmp_path: pathlib.Path) -> None:
    """Started cold after the drain, with no peer to warm-start from (so only the retry can
    tell it), it applies the drain once it listens; a replica that warm-starts from a peer
    has it in the peer's state."""
    cfg = mesh_config(tmp_path)
    pa, pc, pd = free_ports(3)
    a = await start_placement(cfg, port=pa, metrics_port=0,
                              peers=[f"127.0.0.1:{pc}", f"127.0.0.1:{pd}"],
                              learned=tmp_path / "a.json")
    assert a.service.fanout is not None
    a.service.fanout.first_try_s = 0.5
    c = d = None
    try:
        await _set(pa, _drain())  # c and d are down: it returns after the first attempts
        assert a.service.fanout.pending == 2
        c = await start_placement(cfg, port=pc, metrics_port=0, peers=[],
                                  learned=tmp_path / "c.json")
        assert _availability(c) is Availability.ACTIVE  # cold: it has not heard yet
        await eventually(lambda: _availability(c) is Availability.DRAINED, 30,
                         "the retried drain reaching the replica that came up")
        d = await start_placement(cfg, port=pd, metrics_port=0, peers=[f"127.0.0.1:{pa}"],
                                  learned=tmp_path / "d.json")
        assert _availability(d) is Availability.DRAINED  # warm-started from a's state
        await eventually(lambda: a.service.fanout is not None
                         and a.service.fanout.pending == 0, 30, "every peer applied it")
        assert await _drained_rows(pd) == {BACKEND}
    finally:
        for r in (a, c, d):
            if r is not None:
                await r.stop(0)


async def test_an_older_change_arriving_late_does_not_undo_a_newer_one(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    (pb,) = free_ports(1)
    b = await start_placement(cfg, port=pb, metrics_port=0, peers=[],
                              learned=tmp_path / "b.json")
    try:
        await _set(pb, _drain())  # the newest change: now
        late = (("x-switchyard-forwarded-by", "placement-old"),
                (replicate.AT, str(replicate.now_ns() - 60 * 10**9)))
        resp = await _set(pb, _drain(availability=fleet_pb2.AVAILABILITY_ACTIVE), late)
        assert list(resp.backend_ids) == []
        assert _availability(b) is Availability.DRAINED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _set(pb, _drain(), (("x-switchyard-forwarded-by", "p"),
                                      (replicate.AT, "soon")))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert replicate.AT in (err.value.details() or "")
    finally:
        await b.stop(0)


async def test_with_shards_a_drain_reaches_its_shards_standby_and_no_other_shard(
        tmp_path: pathlib.Path) -> None:
    """The peers are the shard's own replicas (``shard.shard_replicas``): a drain of a
    backend of shard 1 made on its primary is on its standby when it returns; shard 0,
    which does not own that backend, is not asked."""
    from tests.unit.test_shard_placement import _two_shards

    cfg, ports = _two_shards(tmp_path, standby=True)
    east = await start_placement(cfg, port=ports[0], metrics_port=0)
    rest = await start_placement(cfg, port=ports[1], metrics_port=0)
    standby = await start_placement(cfg, port=ports[2], metrics_port=0)
    try:
        assert east.service.fanout is None  # alone in its shard: nobody to tell
        assert rest.service.fanout is not None
        assert [p.address for p in rest.service.fanout.peers] == [f"127.0.0.1:{ports[2]}"]
        await _set(ports[1], _drain("west-cheap"))
        assert standby.service.fleet.backends["west-cheap"].availability is \
            Availability.DRAINED
        assert "west-cheap" not in east.service.fleet.backends
    finally:
        for r in (east, rest, standby):
            await r.stop(0)


async def test_a_change_the_peer_answers_not_found_does_not_hold_back_later_changes(
        tmp_path: pathlib.Path) -> None:
    """A drain of a backend that only the sending replica knows (an agent that reached that
    replica only) gets NOT_FOUND from the peer: final for that change, and the next drain
    still reaches the peer. Before, the NOT_FOUND change was retried for ever at the head of
    the peer's queue and every later change waited behind it (review11 finding 2)."""
    cfg = mesh_config(tmp_path)
    b = await start_placement(cfg, port=0, metrics_port=0, peers=[])
    a = await start_placement(cfg, port=0, metrics_port=0, peers=[f"127.0.0.1:{b.port}"])
    try:
        only_on_a = fleet_pb2.Backend(
            id="only-on-a", endpoint="127.0.0.1:1", cloud="aws", region="r-east",
            accelerator="gpu-fast", accelerator_count=1, price_class="on-demand",
            max_concurrency=4, variants=[fleet_pb2.VariantRef(
                logical_model="summarize", variant="summarize-small", quality=0.7)])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ch:
            await placement_pb2_grpc.PlacementStub(ch).RegisterBackend(
                placement_pb2.RegisterBackendRequest(backend=only_on_a), timeout=10)
        assert "only-on-a" not in b.service.fleet.backends
        await _set(a.port, _drain("only-on-a"))
        await _set(a.port, _drain())
        assert a.service.fleet.backends["only-on-a"].availability is Availability.DRAINED
        await eventually(lambda: _availability(b) is Availability.DRAINED, 10,
                         "the later drain of east-fast reaching replica b")
        assert a.service.fanout is not None
        await eventually(lambda: a.service.fanout is not None
                         and a.service.fanout.pending == 0, 10, "no change left queued")
        assert await _drained_rows(b.port) == {BACKEND}
    finally:
        await a.stop(0)
        await b.stop(0)
