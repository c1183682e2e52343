"""Placement replicas that share the fleet by region (issue 15, scale-out): each shard
registers and builds only its regions' backends, an edge watching every shard over real
gRPC holds the merged table, and a shard's standby takes over without the edge losing rows."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from placement.errors import ConfigError
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.config import MeshConfig
from services.convert import backends_from_config
from services.edge.routes import RouteStore
from services.edge.shards import ShardedLink, shard_key, shard_lookup
from services.edge.stats import EdgeStats
from services.placement import shard
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, mesh_config

SUMMARIZE = {"east-fast/summarize-small", "east-fast/summarize-large",
             "central-cheap/summarize-small", "central-cheap/summarize-large",
             "west-cheap/summarize-small"}


def _sharded(tmp: pathlib.Path, shards: list[dict[str, Any]]) -> MeshConfig:
    raw = mesh_config(tmp).model_dump()
    raw["placement"]["shards"] = shards
    return MeshConfig.model_validate(raw)


def _two_shards(tmp: pathlib.Path, standby: bool = False) -> tuple[MeshConfig, list[int]]:
    ports = [free_port() for _ in range(3)]
    east = [f"127.0.0.1:{ports[0]}"]
    rest = [f"127.0.0.1:{ports[1]}", *([f"127.0.0.1:{ports[2]}"] if standby else [])]
    return _sharded(tmp, [{"replicas": east, "regions": ["r-east"]},
                          {"replicas": rest, "regions": ["r-central", "r-west"]}]), ports


def _deployments(running: RunningPlacement) -> set[str]:
    running.service.hub.publish()
    return {c.deployment_id for (model, _), t in running.service.hub.tables.items()
            if model == "summarize" for c in t.candidates}


@pytest.mark.parametrize(("shards", "error"), [
    ([{"replicas": ["a:1"], "regions": ["r-nowhere"]}],
     r"placement.shards\[0\].regions 'r-nowhere' is not in regions"),
    ([{"replicas": ["a:1"], "regions": ["r-east", "r-west", "r-central"]},
      {"replicas": ["b:1"], "regions": ["r-west"]}],
     r"placement.shards\[1\].regions 'r-west' is already owned by placement.shards\[0\]"),
    ([{"replicas": ["a:1"], "regions": ["r-east", "r-west"]}],
     r"backends\[1\].region 'r-central' is owned by no placement.shards entry"),
    ([{"replicas": ["a:1"], "regions": ["r-east"]},
      {"replicas": ["a:1"], "regions": ["r-west", "r-central"]}],
     r"placement.shards\[1\].replicas 'a:1' is already a replica of placement.shards\[0\]"),
])
def test_shards_are_validated_with_the_path(tmp_path: pathlib.Path, shards: list[dict[str, Any]],
                                            error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        _sharded(tmp_path, shards)


def test_a_replica_owns_its_shards_regions_and_an_unlisted_one_is_refused(
        tmp_path: pathlib.Path) -> None:
    cfg, ports = _two_shards(tmp_path, standby=True)
    assert shard.ownership(cfg, f"0.0.0.0:{ports[2]}").regions == {"r-central", "r-west"}
    assert shard.shard_replicas(cfg, f"127.0.0.1:{ports[1]}") == [
        f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}"]
    assert shard.ownership(mesh_config(tmp_path), "x:1").owns("r-west")  # unsharded: all
    with pytest.raises(ConfigError, match=r"'127.0.0.1:1' is in no placement.shards"):
        shard.ownership(cfg, "127.0.0.1:1")


async def test_each_shard_builds_its_own_regions_rows_and_refuses_the_others(
        tmp_path: pathlib.Path) -> None:
    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0])
    rest = await start_placement(cfg, port=ports[1])
    try:
        assert set(east.service.fleet.backends) == {"east-fast"}
        assert set(rest.service.fleet.backends) == {"central-cheap", "west-cheap"}
        assert _deployments(east) == {d for d in SUMMARIZE if d.startswith("east-")}
        assert _deployments(rest) == {d for d in SUMMARIZE if not d.startswith("east-")}
        west = next(b for b in backends_from_config(cfg) if b.id == "west-cheap")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await placement_pb2_grpc.PlacementStub(ch).RegisterBackend(
                    placement_pb2.RegisterBackendRequest(backend=west), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "region 'r-west', which this placement replica" in (err.value.details() or "")
        assert "west-cheap" not in east.service.fleet.backends
    finally:
        await east.stop(0)
        await rest.stop(0)


async def test_an_edge_merges_every_shards_rows_and_keeps_them_through_a_failover(
        tmp_path: pathlib.Path) -> None:
    cfg, ports = _two_shards(tmp_path, standby=True)
    east = await start_placement(cfg, port=ports[0])
    rest = await start_placement(cfg, port=ports[1])
    standby: RunningPlacement | None = None
    store = RouteStore("r-east", None, shard_of=shard_lookup(cfg))
    link = ShardedLink("edge-east", "r-east",
                       {shard_key(i): s.replicas for i, s in enumerate(cfg.placement.shards)},
                       store, EdgeStats(10), on_update=lambda: None, report_interval_s=0.2)
    watch = asyncio.create_task(link.watch())
    summarize = lambda: {c.deployment_id for c in store.candidates.get("summarize", ())}  # noqa: E731
    try:
        await eventually(lambda: link.connected and summarize() == SUMMARIZE, 5,
                         "the edge holds both shards' rows")
        # One shard's primary dies: its rows stay (static stability), the standby takes over.
        await rest.stop(0)
        await eventually(lambda: not link.links[shard_key(1)].connected, 5, "shard 1 lost")
        assert summarize() == SUMMARIZE
        standby = await start_placement(cfg, port=ports[2])
        await eventually(lambda: link.links[shard_key(1)].connected_to
                         == f"127.0.0.1:{ports[2]}" and link.connected, 10,
                         "the edge follows shard 1's standby")
        assert summarize() == SUMMARIZE
        # A row the standby changes reaches the edge; shard 0's rows are untouched by it.
        await standby.service.SetAvailability(placement_pb2.SetAvailabilityRequest(
            scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
            availability=2), None)  # type: ignore[arg-type]
        drained = lambda: {c.deployment_id for c in store.candidates["summarize"]  # noqa: E731
                           if c.availability.value == 2}
        await eventually(lambda: drained() == {"west-cheap/summarize-small"}, 5,
                         "the drain pushed by the standby")
        assert summarize() == SUMMARIZE
    finally:
        watch.cancel()
        for running in (east, rest, standby):
            if running is not None:
                await running.stop(0)


async def test_each_observation_goes_to_the_shard_of_its_deployment(
        tmp_path: pathlib.Path) -> None:
    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0])
    rest = await start_placement(cfg, port=ports[1])
    store = RouteStore("r-east", None, shard_of=shard_lookup(cfg))
    stats = EdgeStats(10)
    link = ShardedLink("edge-east", "r-east",
                       {shard_key(i): s.replicas for i, s in enumerate(cfg.placement.shards)},
                       store, stats, on_update=lambda: None, report_interval_s=0.2)
    tasks = [asyncio.create_task(link.watch())]
    try:
        await eventually(lambda: link.connected and "summarize" in store.candidates, 5)
        for dep in ("east-fast/summarize-small", "west-cheap/summarize-small",
                    "gone/summarize-small"):  # the last is in no table: no shard owns it
            for _ in range(20):
                stats.record(dep, 12.0, True)
        tasks.append(asyncio.create_task(link.report()))
        await eventually(lambda: east.service.fleet.use and rest.service.fleet.use, 5,
                         "both shards got observations")
        assert set(east.service.fleet.use) == {"east-fast/summarize-small"}
        assert set(rest.service.fleet.use) == {"west-cheap/summarize-small"}
    finally:
        for t in tasks:
            t.cancel()
        await east.stop(0)
        await rest.stop(0)


def test_a_shards_snapshot_and_removals_replace_only_its_own_rows(
        tmp_path: pathlib.Path) -> None:
    cfg, _ = _two_shards(tmp_path)
    store = RouteStore("r-east", None, shard_of=shard_lookup(cfg))

    def table(*rows: tuple[str, str]) -> placement_pb2.RouteTable:
        return placement_pb2.RouteTable(model="summarize", edge_region="r-east", candidates=[
            placement_pb2.Candidate(deployment_id=d, backend_id=d.split("/")[0], region=r,
                                    variant=d.split("/")[1]) for d, r in rows])

    east_a, east_b = ("east-fast/summarize-small", "r-east"), ("east-fast/summarize-large",
                                                               "r-east")
    west = ("west-cheap/summarize-small", "r-west")
    ids = lambda: {c.deployment_id for c in store.candidates.get("summarize", ())}  # noqa: E731
    store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=[table(east_a, east_b)]),
                shard=shard_key(0))
    store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=[table(west)]),
                shard=shard_key(1))
    assert ids() == {east_a[0], east_b[0], west[0]}
    store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=[table(east_a)]),
                shard=shard_key(0))  # shard 0 lost a row: only that row goes
    assert ids() == {east_a[0], west[0]}
    assert {c.deployment_id for c in store.tables["summarize"].candidates} == ids()
    store.apply(placement_pb2.RouteUpdate(removed_models=["summarize"]), shard=shard_key(1))
    assert ids() == {east_a[0]}
    store.apply(placement_pb2.RouteUpdate(removed_models=["summarize"]), shard=shard_key(0))
    assert "summarize" not in store.candidates and "summarize" not in store.tables


async def test_an_edge_started_from_a_sharded_mesh_watches_every_shard(
        tmp_path: pathlib.Path) -> None:
    from services.edge.main import start_edge

    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0])
    rest = await start_placement(cfg, port=ports[1])
    edge = await start_edge(cfg, cfg.edges[0], port=0, metrics_port=0)
    try:
        assert isinstance(edge.link, ShardedLink)
        store = edge.router.store
        await eventually(lambda: edge.link.connected and {
            c.deployment_id for c in store.candidates.get("summarize", ())} == SUMMARIZE, 5,
            "the edge's router holds both shards' rows")
    finally:
        await edge.stop(0)
        await east.stop(0)
        await rest.stop(0)


def test_shard_wiring_from_the_config(tmp_path: pathlib.Path) -> None:
    """What `switchyard up`, Envoy's bootstrap and `switchyard drain` take from the shards."""
    from services.up import Mesh

    cfg, ports = _two_shards(tmp_path, standby=True)
    assert shard.ads_replicas(cfg, "r-west") == [f"127.0.0.1:{ports[1]}",
                                                 f"127.0.0.1:{ports[2]}"]
    assert shard.owning_shards(cfg, "backend", "east-fast") == [0]
    assert shard.owning_shards(cfg, "region", "r-west") == [1]
    assert shard.owning_shards(cfg, "cloud", "aws") == [0, 1]  # r-east, r-west
    assert shard.owning_shards(cfg, "backend", "nowhere") == [0, 1]
    kids = Mesh(cfg, "mesh.toml").placement_children()
    assert [(k.name, k.address, k.argv[-1]) for k in kids] == [
        ("placement shards[0] primary", f"127.0.0.1:{ports[0]}", str(ports[0])),
        ("placement shards[1] primary", f"127.0.0.1:{ports[1]}", str(ports[1])),
        ("placement shards[1] standby 1", f"127.0.0.1:{ports[2]}", str(ports[2]))]
    remote = _sharded(tmp_path, [{"replicas": ["10.0.0.7:50050"], "regions": ["r-east"]},
                                 {"replicas": ["a:1"], "regions": ["r-central", "r-west"]}])
    with pytest.raises(ConfigError, match=r"shards\[0\].replicas '10.0.0.7:50050'"):
        Mesh(remote, "mesh.toml").placement_children()


def test_each_replica_serves_the_metrics_port_its_shard_lists(tmp_path: pathlib.Path) -> None:
    cfg = _sharded(tmp_path, [
        {"replicas": ["127.0.0.1:7001", "127.0.0.1:7002"], "metrics_ports": [9001, 9002],
         "regions": ["r-east"]},
        {"replicas": ["127.0.0.1:7003"], "regions": ["r-central", "r-west"]}])
    assert shard.metrics_port(cfg, "127.0.0.1:7002") == 9002
    assert shard.metrics_port(cfg, "0.0.0.0:7001") == 9001
    assert shard.metrics_port(cfg, "127.0.0.1:7003") == 0  # none listed: none served
    with pytest.raises(ValidationError, match=r"shards\[0\].metrics_ports has 1 ports for 2"):
        _sharded(tmp_path, [{"replicas": ["a:1", "a:2"], "metrics_ports": [9001],
                             "regions": ["r-east", "r-central", "r-west"]}])


async def test_the_ads_federation_merges_forwards_and_keeps_a_lost_shards_rows(
        tmp_path: pathlib.Path) -> None:
    """What an Envoy edge of r-east is compiled from at shards[0]'s replica (no Envoy here;
    tests/integration/test_envoy_shards.py has the real one)."""
    from services.api.switchyard.v1 import telemetry_pb2

    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0], metrics_port=0)
    rest: RunningPlacement | None = await start_placement(cfg, port=ports[1], metrics_port=0)
    assert east.ads is not None and east.ads.federation is not None
    federation = east.ads.federation
    merged = lambda: {c.deployment_id for t in federation.snapshot("r-east")  # noqa: E731
                      if t.model == "summarize" for c in t.candidates}
    got: list[telemetry_pb2.ObservationReport] = []

    async def local(report: telemetry_pb2.ObservationReport) -> object:
        got.append(report)
        return await east.service.ReportObservations(report, None)  # type: ignore[arg-type]

    forward = federation.report(local)

    def report() -> telemetry_pb2.ObservationReport:
        return telemetry_pb2.ObservationReport(edge_id="envoy-1", edge_region="r-east", observations=[
            telemetry_pb2.Observation(deployment_id=d, edge_region="r-east", calls_per_s=3.0)
            for d in ("east-fast/summarize-small", "west-cheap/summarize-small")])

    try:
        await eventually(lambda: merged() == SUMMARIZE and federation.connected("r-east"), 5,
                         "shards[0]'s federation holds both shards' rows")
        version = federation.version
        await forward(report())
        assert [o.deployment_id for o in got[-1].observations] == ["east-fast/summarize-small"]
        assert rest is not None
        assert set(rest.service.fleet.use) == {"west-cheap/summarize-small"}
        assert ("r-east", "envoy-1") in rest.service.fleet.use["west-cheap/summarize-small"]
        assert federation.forwarded == 1 and federation.dropped == 0
        # shards[1] changes a row: the federation's version moves (Envoy is recompiled).
        await rest.service.SetAvailability(placement_pb2.SetAvailabilityRequest(
            scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
            availability=2), None)  # type: ignore[arg-type]
        await eventually(lambda: federation.version > version, 5, "the drain arrived")
        await rest.stop(0)
        rest = None
        await eventually(lambda: not federation.connected("r-east"), 5, "shards[1] lost")
        east.service.hub.publish()
        assert merged() == SUMMARIZE  # its last rows stay
        await forward(report())  # its observation cannot be forwarded: dropped, counted
        assert federation.dropped == 1
        assert [o.deployment_id for o in got[-1].observations] == ["east-fast/summarize-small"]
    finally:
        await east.stop(0)
        if rest is not None:
            await rest.stop(0)


async def test_a_replica_behind_its_shards_service_warm_starts_from_a_sibling(
        tmp_path: pathlib.Path) -> None:
    """The Helm chart lists a shard's Service as its replica: a new pod told that address
    (``--shard-address``) fetches the learned state of whichever sibling the Service reaches
    (here the address is the sibling's own)."""
    from placement.fleet import Availability

    cfg, ports = _two_shards(tmp_path)
    sibling = await start_placement(cfg, port=ports[1], metrics_port=0)
    try:
        await sibling.service.SetAvailability(placement_pb2.SetAvailabilityRequest(
            scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
            availability=2), None)  # type: ignore[arg-type]
        pod = await start_placement(cfg, port=0, metrics_port=0,
                                    learned=tmp_path / "pod" / "learned.json",
                                    shard_address=f"127.0.0.1:{ports[1]}")
        try:
            assert set(pod.service.fleet.backends) == {"central-cheap", "west-cheap"}
            assert (pod.service.fleet.backends["west-cheap"].availability
                    == Availability.DRAINED)  # learned from the sibling, before its 1st build
        finally:
            await pod.stop(0)
    finally:
        await sibling.stop(0)


async def test_explain_on_a_shard_explains_the_whole_table_an_edge_merges(
        tmp_path: pathlib.Path) -> None:
    """``switchyard explain`` asks one replica; with shards it must explain every shard's
    deployments (what an edge routes on), and say which shard it could not ask."""
    cfg, ports = _two_shards(tmp_path)
    east = await start_placement(cfg, port=ports[0])
    rest: RunningPlacement | None = await start_placement(cfg, port=ports[1])
    request = placement_pb2.ExplainRequest(model="summarize", edge_region="r-east")
    try:
        assert rest is not None
        rest.service.hub.publish()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
            resp = await placement_pb2_grpc.PlacementStub(ch).Explain(request, timeout=5)
        assert {c.candidate.deployment_id for c in resp.candidates} == SUMMARIZE
        assert "did not answer" not in resp.summary
        await rest.stop(0)
        rest = None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
            resp = await placement_pb2_grpc.PlacementStub(ch).Explain(request, timeout=10)
        assert {c.candidate.deployment_id for c in resp.candidates} == {
            d for d in SUMMARIZE if d.startswith("east-")}
        assert "shards[1] did not answer" in resp.summary
    finally:
        await east.stop(0)
        if rest is not None:
            await rest.stop(0)
