"""Warm restart from a peer (issue 15): a replica started on another port, with no file of
its own or an older one, fetches a running replica's learned state over real gRPC and routes
as it does; a peer that is down or speaks another state format leaves it cold, and says so."""

from __future__ import annotations

import asyncio
import json
import pathlib

import grpc
import pytest
from structlog.testing import capture_logs

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.placement import peer, persist
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, mesh_config
from tests.unit.test_placement_warm_restart import DEP, _learn, _rows


def _learned(rows: dict[tuple[str, str], list[placement_pb2.Candidate]]) -> bool:
    """What a cold replica does not have: the edge's observed p95 and the operator's drain."""
    dep = next(c for c in rows[("summarize", "r-east")] if c.deployment_id == DEP)
    return (dep.observed and dep.latency_p95_ms == 42.5
            and any(c.dropped_reason == "backend drained by operator"
                    for r in rows.values() for c in r))


def _full(running: RunningPlacement) -> dict[tuple[str, str], list[placement_pb2.Candidate]]:
    """The peer's tables rebuilt in full. Its incremental tables can hold stale slot shares:
    a new edge's first report re-splits every backend's allowance (``FleetState.slot_share``
    counts the edges seen) but marks only the backend it reported on dirty."""
    running.service.fleet.all_dirty = True
    return _rows(running)


class FakeFuturePeer(placement_pb2_grpc.PlacementServicer):
    """A fake replica of another release: answers GetLearnedState with ``fmt`` and ``state``."""

    def __init__(self, fmt: int, state: bytes) -> None:
        self.fmt, self.state = fmt, state

    async def GetLearnedState(self, request: placement_pb2.LearnedStateRequest,
                              context: object) -> placement_pb2.LearnedState:
        return placement_pb2.LearnedState(format=self.fmt, state=self.state,
                                          placement_id="placement-future")


async def _fake_peer(servicer: FakeFuturePeer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    placement_pb2_grpc.add_PlacementServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_replica_on_another_port_starts_with_its_peers_tables(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    a = await start_placement(cfg, port=0, metrics_port=0)
    try:
        await _learn(a)
        assert _learned(_rows(a))
        fresh = tmp_path / "elsewhere" / "placement.learned.json"  # no file of its own
        with capture_logs() as logs:
            b = await start_placement(cfg, port=0, metrics_port=0, learned=fresh,
                                      peers=[f"127.0.0.1:{a.port}"])
        try:
            # Its first build already has what only the peer knew (no agent or edge talks to
            # it here): the 2 s target is met by construction, not by this host's
            # speed (benchmarks.restart measures it).
            assert _learned(_rows(b))
            loaded = [e for e in logs if e["event"] == "learned_state_loaded"]
            assert [(e["source"], e["origin"]) for e in loaded] == [
                ("peer", f"127.0.0.1:{a.port}")]
            await eventually(lambda: _rows(b) == _full(a), 30,
                             "the new replica's tables equal its peer's")
            assert ({k: (o.samples, o.p95_ms) for k, o in b.service.fleet.observed.items()}
                    == {k: (o.samples, o.p95_ms) for k, o in a.service.fleet.observed.items()})
        finally:
            await b.stop(0.2)
    finally:
        await a.stop(0.2)


async def test_an_older_own_file_loses_to_the_peer(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    cold = await start_placement(cfg, port=port, metrics_port=0)
    await cold.stop(0.2)  # leaves a file with registrations and nothing learned
    own = persist.path_for(cfg.path(cfg.run_dir), port)
    assert json.loads(own.read_text())["backends"]
    a = await start_placement(cfg, port=0, metrics_port=0)
    try:
        await _learn(a)
        with capture_logs() as logs:
            b = await start_placement(cfg, port=port, metrics_port=0,
                                      peers=[f"127.0.0.1:{a.port}"])
        try:
            assert _rows(b) == _full(a)
            loaded = [e for e in logs if e["event"] == "learned_state_loaded"]
            assert [(e["source"], e["origin"]) for e in loaded] == [
                ("peer", f"127.0.0.1:{a.port}")]
        finally:
            await b.stop(0.2)
    finally:
        await a.stop(0.2)


async def test_a_newer_own_file_wins_over_a_cold_peer(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    first = await start_placement(cfg, port=port, metrics_port=0)
    await _learn(first)
    before = _full(first)
    await first.stop(0.2)
    cold_peer = await start_placement(cfg, port=0, metrics_port=0,
                                      learned=tmp_path / "peer" / "x.json")
    try:
        b = await start_placement(cfg, port=port, metrics_port=0,
                                  peers=[f"127.0.0.1:{cold_peer.port}"])
        try:
            assert _rows(b) == before and _learned(before)
        finally:
            await b.stop(0.2)
    finally:
        await cold_peer.stop(0.2)


async def test_an_unreachable_peer_means_a_cold_start_said_so(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    nobody = f"127.0.0.1:{free_port()}"
    with capture_logs() as logs:
        # A hang fails here; how fast a refused connect returns is the host's, not ours.
        b = await asyncio.wait_for(start_placement(cfg, port=0, metrics_port=0, peers=[nobody],
                                                   learned=tmp_path / "none.json"), 30)
    try:
        assert all(s.last is None for s in b.service.fleet.backends.values())
        assert not b.service.fleet.observed
        down = [e for e in logs if e["event"] == "peer_state_unavailable"]
        assert [e["peer"] for e in down] == [nobody] and "UNAVAILABLE" in down[0]["error"]
        assert [e["event"] for e in logs if e["event"] == "learned_state_none"] == [
            "learned_state_none"]
        assert "starting cold" in next(e for e in logs
                                       if e["event"] == "learned_state_none")["action"]
    finally:
        await b.stop(0.2)


@pytest.mark.parametrize(("fmt", "state", "why"), [
    (persist.FORMAT + 1, peer.encode({"format": persist.FORMAT + 1, "backends": {"ghost": {}}}),
     f"format {persist.FORMAT + 1} (from placement-future), this placement reads "
     f"[{persist.FORMAT}]"),
    (persist.FORMAT, b"not zlib", "state does not decode"),
    (persist.FORMAT, peer.encode({"format": 7}), "state says format 7"),
])
async def test_state_a_replica_does_not_read_is_refused_by_name(
        tmp_path: pathlib.Path, fmt: int, state: bytes, why: str) -> None:
    cfg = mesh_config(tmp_path)
    server, address = await _fake_peer(FakeFuturePeer(fmt, state))
    try:
        with capture_logs() as logs:
            b = await start_placement(cfg, port=0, metrics_port=0, peers=[address],
                                      learned=tmp_path / "none.json")
        try:
            assert "ghost" not in b.service.fleet.backends
            assert all(s.last is None for s in b.service.fleet.backends.values())
            refused = [e for e in logs if e["event"] == "peer_state_refused"]
            assert len(refused) == 1 and refused[0]["peer"] == address
            assert refused[0]["format"] == fmt and refused[0]["reads"] == [persist.FORMAT]
            assert why in refused[0]["error"]
            assert any(e["event"] == "learned_state_none" for e in logs)
        finally:
            await b.stop(0.2)
    finally:
        await server.stop(0)


def test_configured_peers_are_the_other_replicas_only_when_this_one_is_listed() -> None:
    listed = ["127.0.0.1:50050", "127.0.0.1:50051", "10.0.0.2:50050"]
    assert peer.configured_peers(listed, "127.0.0.1", 50051) == [
        "127.0.0.1:50050", "10.0.0.2:50050"]
    assert peer.configured_peers(listed, "127.0.0.1", 40000) == []
