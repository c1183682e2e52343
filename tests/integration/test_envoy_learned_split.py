"""A weighted route learned from real traffic (issue 12): real Triton backends, real placement
serving ADS, a real Envoy edge. Calls of one class come in faster than the order's first
deployment can take at the utilisation its SLO allows; placement learns the class's rate
from Envoy's access log, its next compile splits the class over weighted rotations of the
order (``placement.splits`` via ``services.xds.plan``), and Envoy's active config
(admin ``/config_dump``) carries those weights. Everything asserted is what placement
decided (its learned rate, its compile with and without that rate) and what Envoy runs,
never how fast this host is."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from placement.edge_learning import Learned
from services.api.switchyard.v1 import placement_pb2
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.envoy.launcher import EnvoyEdge
from services.placement.main import RunningPlacement
from services.ports import free_port
from services.xds import server as xds_server
from services.xds.envoy_types import EnvoySettings, cluster_name, model_cluster_name
from services.xds.plan import route
from services.xds.resources import RegionConfig, compile_region
from services.xds.routes import rotation_cluster_name
from tests.envoy_harness import ClosedLoop, running_envoy_edge
from tests.mesh_harness import PRICES, eventually

pytestmark = pytest.mark.integration

MODEL = "summarize"
SLO_MS = 300
CLIENTS = 4  # closed-loop callers: enough to keep a one-slot backend busy


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    """Two cheap one-slot backends away from the edge, the cheaper one first in the order;
    the variant does enough real work per call that one slot cannot take every call at the
    utilisation the SLO allows."""
    tmp = tmp_path_factory.mktemp("envoy-split")
    (tmp / "prices.toml").write_text(PRICES)
    return MeshConfig.model_validate({
        "base_dir": str(tmp), "run_dir": str(tmp / "run"), "prices_file": "prices.toml",
        "regions": [{"name": "r-east", "cloud": "aws"}, {"name": "r-west", "cloud": "aws"},
                    {"name": "r-central", "cloud": "gcp"}],
        "rtt": [{"a": "r-east", "b": "r-west", "ms": 40}, {"a": "r-east", "b": "r-central",
                                                           "ms": 20},
                {"a": "r-west", "b": "r-central", "ms": 30}],
        "models": [{"name": MODEL, "default_slo_ms": SLO_MS, "variants": [
            {"name": "summarize-small", "quality": 0.7, "matmul_n": 256, "matmul_iters": 8}]}],
        "backends": [
            {"id": "central-cheap", "region": "r-central", "accelerator": "gpu-cheap",
             "price_class": "spot", "grpc_port": free_port(), "max_concurrency": 1,
             "variants": ["summarize-small"]},
            {"id": "west-cheap", "region": "r-west", "accelerator": "gpu-cheap",
             "price_class": "spot", "grpc_port": free_port(), "max_concurrency": 1,
             "variants": ["summarize-small"]},
        ],
        "edges": [{"id": "edge-east", "region": "r-east", "port": 0}],
        "placement": {"port": 0, "coalesce_ms": 20},
        "routing": {"observed_min_samples": 10},
        "edge": {"report_interval_s": 0.5},
    })


@dataclass
class Compiles:
    """What placement compiled for the region, as it compiled it."""

    seen: list[tuple[list[placement_pb2.RouteTable], Learned, RegionConfig]] = field(
        default_factory=list)

    def wrap(self, region: str) -> Any:
        def compile_and_keep(r: str, tables: Iterable[placement_pb2.RouteTable], *args: Any,
                             **kwargs: Any) -> RegionConfig:
            tables = list(tables)
            got = compile_region(r, tables, *args, **kwargs)
            if r == region:
                learned = args[2] if len(args) > 2 else kwargs.get("learned") or Learned()
                self.seen.append((tables, learned, got))
            return got
        return compile_and_keep


@dataclass
class SplitMesh:
    placement: RunningPlacement
    envoy: EnvoyEdge
    compiles: Compiles


@pytest.fixture
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess], tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SplitMesh]:
    compiles = Compiles()
    monkeypatch.setattr(xds_server, "compile_region", compiles.wrap(cfg.edges[0].region))
    async with running_envoy_edge(cfg, tmp_path, concurrency=2, ready_s=30) as (placement,
                                                                                envoy):
        yield SplitMesh(placement, envoy, compiles)


def envoy_route(dump: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The route called ``name`` in Envoy's active route configuration."""
    for c in dump["configs"]:
        for rc in c.get("dynamic_route_configs", []):
            for vh in rc["route_config"]["virtual_hosts"]:
                for r in vh["routes"]:
                    if r.get("name") == name:
                        return dict(r["route"])
    return None


def pushed(cfg: RegionConfig) -> tuple[str, str, dict[str, int]]:
    """The route placement's compile gives the calls' SLO class (as ``routes.py`` names it),
    its aggregate, and the weighted clusters of its rotations (weights in thousandths)."""
    got = route(cfg.models, MODEL, SLO_MS)
    assert got is not None and got.index is not None
    k = cfg.models[MODEL].classes[got.index]
    return (f"{MODEL} slo [{k.lo}, {k.hi or ''})", model_cluster_name(MODEL, got.index),
            {rotation_cluster_name(MODEL, got.index, order[0]): max(1, round(w * 1000))
             for w, order in got.rotations})


def shape(models: dict[str, Any]) -> tuple[object, ...]:
    """What the calls' class route sends where: its order, rotations and feasible set."""
    got = route(models, MODEL, SLO_MS)
    assert got is not None and got.index is not None
    return got.order, got.rotations, models[MODEL].classes[got.index].feasible


def aggregate_children(dump: dict[str, Any], name: str) -> list[str] | None:
    """The children of Envoy's active aggregate cluster ``name``, in order."""
    for c in dump["configs"]:
        for dc in c.get("dynamic_active_clusters", []):
            cluster = dc["cluster"]
            if cluster.get("name") == name:
                return list(cluster["cluster_type"]["typed_config"]["clusters"])
    return None


async def test_what_placement_learns_of_a_busy_class_reaches_envoys_route(
        mesh: SplitMesh) -> None:
    """Calls of one class, faster than the order's first deployment takes at the utilisation
    its SLO allows: placement learns the class's rate (and, when calls are late on a loaded
    host, miss margins) from Envoy's access log and compiles them into the class's route;
    Envoy runs that route. On a host fast enough that calls meet their SLO the effect is a
    split over weighted rotations of the order; if they miss it, the margins move the late
    deployment out of the feasible set first, and the order is what changed."""
    ads = mesh.placement.ads
    assert ads is not None
    region = mesh.envoy.node.region
    settings = ads.settings
    assert isinstance(settings, EnvoySettings)

    def dump() -> dict[str, Any]:
        return dict(json.loads(mesh.envoy.admin("/config_dump")))

    def envoy_runs(cfg: RegionConfig) -> bool:
        """Envoy's route for the calls' class is the one ``cfg`` compiled."""
        d = dump()
        name, cluster, weights = pushed(cfg)
        got = envoy_route(d, name)
        if got is None:
            return False
        if weights:
            return {c["name"]: c["weight"] for c in got.get("weighted_clusters", {}).get(
                "clusters", [])} == weights
        matched = route(cfg.models, MODEL, SLO_MS)
        assert matched is not None
        return got.get("cluster") == cluster and aggregate_children(d, cluster) == [
            cluster_name(x) for x in matched.order]

    await eventually(lambda: mesh.compiles.seen and mesh.compiles.seen[-1][2].models.get(
        MODEL) is not None, 30, "placement compiled the model's routes")
    await eventually(lambda: envoy_runs(mesh.compiles.seen[-1][2]), 30,
                     "Envoy runs placement's last compile")
    before = route(mesh.compiles.seen[-1][2].models, MODEL, SLO_MS)
    assert before is not None and before.rotations == ()  # no call yet: the order alone
    seen: dict[str, Any] = {}

    def envoy_runs_what_placement_learned() -> bool:
        # the compile Envoy runs is the last one placement made for the region, and it
        # differs from what the same tables compile to with nothing learned
        tables, learned, compiled = mesh.compiles.seen[-1]
        now = route(compiled.models, MODEL, SLO_MS)
        plain = compile_region(region, tables, ads.profile, settings, Learned()).models
        assert now is not None
        if shape(compiled.models) == shape(plain):
            return False  # nothing learned changes the route yet
        if not envoy_runs(compiled):
            return False  # a newer compile is on its way to Envoy
        seen.update(tables=tables, learned=learned, route=now, shape=shape(compiled.models),
                    plain=shape(plain))
        return True

    with ClosedLoop(mesh.envoy.address, MODEL, CLIENTS, [("x-slo-ms", str(SLO_MS))],
                    10.0) as load:
        try:
            await eventually(envoy_runs_what_placement_learned, 90,
                             "Envoy's route for the class is what placement learned",
                             poll_s=0.25)
        except AssertionError as err:
            tables, learned, _ = mesh.compiles.seen[-1]
            raise AssertionError(f"{err}: calls {load.ok} ok, {len(load.failed)} failed; "
                                 f"learned {learned}; candidates {list(tables)}") from None
    # Calls were served through Envoy (some may time out on a loaded host: not asserted).
    assert load.ok > 0, load.failed[:3]
    learned, now, tables = seen["learned"], seen["route"], seen["tables"]
    # what placement learned from Envoy's access log: the class's rate, keyed by its SLO
    assert learned.rates.get((MODEL, SLO_MS), 0.0) > 0, learned.rates
    # ... and compiled with it, exactly what Envoy runs (one implementation, recomputed)
    again = route(compile_region(region, tables, ads.profile, settings, learned).models,
                  MODEL, SLO_MS)
    assert again == now
    if now.rotations:
        # a split: weighted rotations of the class's order, each deployment first once;
        # without the rate (margins kept) the same tables give the order alone
        assert all(sorted(o) == sorted(now.order) for _, o in now.rotations)
        assert len({o[0] for _, o in now.rotations}) == len(now.rotations) >= 2
        no_rate = route(compile_region(region, tables, ads.profile, settings, Learned(
            margins=learned.margins, reserved=learned.reserved)).models, MODEL, SLO_MS)
        assert no_rate is not None and no_rate.rotations == ()
    else:
        # late calls: a learned margin took a deployment off the class's feasible set
        margins = learned.margins.get((MODEL, SLO_MS), {})
        assert margins, learned.margins
        assert set(seen["shape"][2]) < set(seen["plain"][2]), (seen["shape"], seen["plain"])
