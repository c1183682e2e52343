"""The persisted snapshot: Envoy's active dynamic config as a static bootstrap without ADS."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.edge.envoy.bootstrap import EnvoyNode, bootstrap
from services.edge.envoy.snapshot import repoint_slow_path, static_bootstrap
from services.xds.resources import (
    EnvoySettings,
    compile_region,
    listener,
    route_config_name,
    slow_path_cluster,
)

_T = "type.googleapis.com/envoy.admin.v3."


def _typed(m: Message) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/" + m.DESCRIPTOR.full_name,
            **json_format.MessageToDict(m, preserving_proto_field_name=True)}


def _dump(with_routes: bool = True) -> dict[str, Any]:
    s = EnvoySettings()
    table = placement_pb2.RouteTable(model="m", edge_region="r", default_slo_ms=100, candidates=[
        placement_pb2.Candidate(deployment_id="b/v", backend_id="b", endpoint="127.0.0.1:9",
                                variant="v", region="r", quality=1, latency_p95_ms=5,
                                cost_usd=1e-6, spare_capacity=1, concurrency=1)])
    rc = compile_region("r", [table], build_profile("cheapest"), s)
    routes = [{"route_config": _typed(r.message)} for r in rc.routes.values()]
    return {"configs": [
        {"@type": _T + "BootstrapConfigDump"},
        {"@type": _T + "ClustersConfigDump", "dynamic_active_clusters": [
            {"version_info": "1", "cluster": _typed(r.message)} for r in rc.clusters.values()]},
        {"@type": _T + "ListenersConfigDump", "dynamic_listeners": [
            {"name": "ingress", "active_state": {
                "listener": _typed(listener("127.0.0.1", 50051, "r", s))}}]},
        {"@type": _T + "RoutesConfigDump",
         "dynamic_route_configs": routes if with_routes else []}]}


def test_the_snapshot_serves_the_active_config_statically_and_asks_placement_for_nothing() -> None:
    ads = bootstrap(EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901), ["127.0.0.1:50050"])
    static = static_bootstrap(_dump(), ads)
    assert static is not None
    assert "dynamic_resources" not in static
    assert static["node"] == ads["node"] and static["admin"] == ads["admin"]
    (lst,) = static["static_resources"]["listeners"]
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    assert "rds" not in hcm and hcm["route_config"]["name"] == route_config_name("r")
    names = [c["name"] for c in static["static_resources"]["clusters"]]
    assert names[0] == "placement"  # still there: the access log and the next ADS start
    assert {"dep:b/v", "model:m"} <= set(names)


def test_no_snapshot_from_a_config_that_is_not_complete_yet() -> None:
    ads = bootstrap(EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901), ["127.0.0.1:50050"])
    assert static_bootstrap(_dump(with_routes=False), ads) is None
    assert static_bootstrap({"configs": []}, ads) is None


def test_a_restarted_edge_points_its_snapshots_slow_path_at_its_new_private_port() -> None:
    node = EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901, slow_path_port=7001)
    ads = bootstrap(node, ["127.0.0.1:50050"])
    assert ads["node"]["metadata"]["slow_path_port"] == 7001  # how placement learns it
    assert "slow_path_port" not in bootstrap(EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901),
                                             ["127.0.0.1:50050"])["node"]["metadata"]
    dump = _dump()
    clusters = dump["configs"][1]["dynamic_active_clusters"]
    clusters.append({"version_info": "1", "cluster": _typed(slow_path_cluster(7001,
                                                                              EnvoySettings()))})
    static = static_bootstrap(dump, ads)
    assert static is not None
    repoint_slow_path(static, 7002)

    def port() -> int:
        (slow,) = (c for c in static["static_resources"]["clusters"] if c["name"] == "slow-path")
        return int(slow["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                   ["address"]["socket_address"]["port_value"])

    assert port() == 7002
    repoint_slow_path(static, 0)  # this process has no slow path: the snapshot is left alone
    assert port() == 7002
