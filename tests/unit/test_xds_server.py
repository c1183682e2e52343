"""The ADS server compiles a region once per hub publish, and never makes the hub publish."""

from __future__ import annotations

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.envoy_types import LISTENER, LISTENER_NAME
from services.xds.listener import listener
from services.xds.resources import EnvoySettings
from services.xds.server import NODE_CACHE_MAX, AdsServer


class _Hub:
    """The two things the ADS server reads from ``RouteHub``."""

    def __init__(self) -> None:
        self.version = 1
        self.snapshots = 0
        self.slo_ms = 100.0

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        self.snapshots += 1  # the real one publishes when the fleet changed since
        return [placement_pb2.RouteTable(model="m", edge_region=region,
                                         default_slo_ms=self.slo_ms)]


def test_acks_between_publishes_reuse_the_compiled_region() -> None:
    hub = _Hub()
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    first = ads.region_config("r")
    for _ in range(5):  # every ACK asks again
        assert ads.region_config("r") is first
    assert hub.snapshots == 1
    hub.version, hub.slo_ms = 2, 200.0  # the hub published a change of the region
    second = ads.region_config("r")
    assert second is not first and hub.snapshots == 2
    assert second.models["m"].default_slo_ms == 200.0


def test_a_publish_that_did_not_change_the_regions_tables_compiles_nothing() -> None:
    """The hub's version is the whole fleet's: another region's change moves it too."""
    hub = _Hub()
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    first = ads.region_config("r")
    hub.version = 2  # published, this region's tables as they were
    assert ads.region_config("r") is first and ads.compiles == 1
    assert hub.snapshots == 2  # read once to know, then not again until the next publish
    assert ads.region_config("r") is first and hub.snapshots == 2


def test_nodes_at_ever_new_addresses_keep_the_per_node_caches_bounded() -> None:
    """Envoys connecting with ever new listen and slow-path ports (a peer's node metadata)
    each get their listener and slow-path cluster, but the caches keep at most
    ``NODE_CACHE_MAX`` of them, oldest first out; before, every address stayed for good."""
    hub = _Hub()
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    n = NODE_CACHE_MAX + 40
    for i in range(n):
        offered = ads.offer("r", "127.0.0.1", 20000 + i, slow_path_port=30000 + i)
        assert offered[LISTENER][LISTENER_NAME] is ads.offer(
            "r", "127.0.0.1", 20000 + i, slow_path_port=30000 + i)[LISTENER][LISTENER_NAME]
    caches = (ads._listeners, ads._slow_path, ads._with_slow_path)
    assert [len(c) for c in caches] == [NODE_CACHE_MAX] * 3
    assert (("127.0.0.1", 20000, "r", True, False) not in ads._listeners
            and ("127.0.0.1", 20000 + n - 1, "r", True, False) in ads._listeners)
    # a forgotten node is served again, rebuilt the same
    again = ads.offer("r", "127.0.0.1", 20000, slow_path_port=30000)
    assert again[LISTENER][LISTENER_NAME].message == listener(
        "127.0.0.1", 20000, "r", ads.settings, slow_path=True)
    assert hub.snapshots == 1  # the region compiled once for all of them

