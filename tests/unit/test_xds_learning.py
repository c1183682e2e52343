"""Envoy's access-log entries reach the live compile (issue 12): the entries name each call's
model and SLO class (listener config), placement's ADS server learns one region's class
rates, miss margins and slow-path load from them (``services.xds.learning``) and compiles
them into that region's next push as weighted rotations and reordered classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2 as als_config_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import duration_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.feedback import AccessLogFeedback
from services.xds.learning import RegionLearning, call_class
from services.xds.plan import route
from services.xds.resources import EnvoySettings, listener, model_cluster_name, route_config_name
from services.xds.routes import rotation_cluster_name
from services.xds.server import AdsServer
from tests.xds_tables import TABLE

PROFILE = build_profile("cheapest")
S = EnvoySettings()




class _Hub:
    """What the ADS server reads of ``RouteHub``: a version and the region's tables."""

    version = 1

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        return [TABLE]


class _FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _ads() -> tuple[AdsServer, _Hub, _FakeClock]:
    hub, clock = _Hub(), _FakeClock()
    ads = AdsServer(hub, PROFILE, S)  # type: ignore[arg-type]
    ads.learning = RegionLearning(clock)
    return ads, hub, clock


def _entry(model: str = "summarize", slo_header: str = "", served_by: str = "small/s",
           took_ms: int = 40, status: str = "0", own_slo_ms: float | None = None,
           cluster: str = "model:summarize") -> accesslog_pb2.HTTPAccessLogEntry:
    """An entry as the pushed listener logs it (``additional_request_headers_to_log``, the
    Lua's dynamic metadata, the ``x-served-by``/``grpc-status`` trailers)."""
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = cluster
    c.time_to_last_downstream_tx_byte.CopyFrom(duration_pb2.Duration(nanos=took_ms * 10**6))
    if model:
        e.request.request_headers["x-switchyard-model"] = model
    if slo_header:
        e.request.request_headers["x-switchyard-slo-ms"] = slo_header
    if own_slo_ms is not None:
        c.metadata.filter_metadata["switchyard"].fields["slo_ms"].number_value = own_slo_ms
    if served_by:
        e.response.response_trailers["x-served-by"] = served_by
    e.response.response_trailers["grpc-status"] = status
    return e


def _default_route(ads: AdsServer) -> object:
    rc = ads.region_config("r-east")
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes
    return next(r for r in routes if r.name == "summarize")


def test_the_listener_logs_each_calls_model_and_slo_class() -> None:
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    listener("127.0.0.1", 8001, "r-east", S).filter_chains[0].filters[0].typed_config.Unpack(hcm)
    cfg = als_config_pb2.HttpGrpcAccessLogConfig()
    hcm.access_log[0].typed_config.Unpack(cfg)
    assert list(cfg.additional_request_headers_to_log) == ["x-switchyard-model",
                                                          "x-switchyard-slo-ms"]
    assert {"x-served-by", "grpc-status"} <= set(cfg.additional_response_trailers_to_log)


def test_a_call_is_classed_as_the_routes_class_it_by_model_and_whole_ms_slo() -> None:
    ads, _, _ = _ads()
    models = ads.region_config("r-east").models
    classes = models["summarize"].classes
    assert len(classes) > 1
    for i, k in enumerate(classes):
        got = call_class(models, "summarize", str(k.lo))
        # learned by its own whole-ms SLO, not the range's (whose ends move with estimates)
        assert got is not None and got.key == ("summarize", k.lo) and got.slo_ms == k.lo
        assert route(models, "summarize", k.lo).index == i  # type: ignore[union-attr]
        if k.hi is not None:  # the range's last whole ms is still this class
            assert route(models, "summarize", k.hi - 1).index == i  # type: ignore[union-attr]
            last = call_class(models, "summarize", str(k.hi - 1))
            assert last is not None and last.key == ("summarize", k.hi - 1)
    no_slo = call_class(models, "summarize", "")
    assert no_slo is not None and no_slo.key == ("summarize", None) and no_slo.slo_ms == 300
    assert call_class(models, "summarize", "fast") == no_slo  # unreadable: the default route
    assert call_class(models, "translate", "100") is None


def test_logged_calls_of_a_busy_class_reach_the_next_push_as_weighted_rotations() -> None:
    ads, hub, clock = _ads()
    plain = _default_route(ads)
    assert plain.route.cluster == model_cluster_name("summarize")  # type: ignore[attr-defined]
    for _ in range(600):  # 60 calls/s for 10 s at the default SLO: small's one slot is full
        assert ads.learning.observe("r-east", _entry())
    clock.t += 10.0
    hub.version = 2
    route = _default_route(ads).route  # type: ignore[attr-defined]
    split = {c.name: c.weight.value for c in route.weighted_clusters.clusters}
    first, second = (rotation_cluster_name("summarize", None, d) for d in ("small/s", "big/s"))
    assert set(split) == {first, second} and split[second] > split[first] > 0
    assert not route.cluster
    assert ads.learning.calls == 600


def test_a_class_that_calms_down_goes_back_to_its_one_aggregate() -> None:
    ads, hub, clock = _ads()
    ads.region_config("r-east")
    for _ in range(600):
        ads.learning.observe("r-east", _entry())
    clock.t += 10.0
    hub.version = 2
    assert _default_route(ads).route.weighted_clusters.clusters  # type: ignore[attr-defined]
    clock.t += 60.0  # a minute without calls: the rate decays
    hub.version = 3
    route = _default_route(ads).route  # type: ignore[attr-defined]
    assert route.cluster == model_cluster_name("summarize")


def test_misses_against_the_calls_own_slo_move_the_class_off_the_deployment() -> None:
    ads, hub, clock = _ads()
    models = ads.region_config("r-east").models
    klass = call_class(models, "summarize", "100")
    matched = route(models, "summarize", 100)
    assert klass is not None and matched is not None and matched.index is not None
    assert models["summarize"].classes[matched.index].lo < 90  # the range starts below 100
    # Met: 90 ms is within the call's own 100 ms, though past the class's lower bound.
    for _ in range(20):
        ads.learning.observe("r-east", _entry(slo_header="100", own_slo_ms=100, took_ms=90))
    clock.t += 1.0
    learned = ads.learning.learned("r-east", {})
    assert learned.margins.get(klass.key, {}) == {}
    # Missed: 120 ms against 100.
    for _ in range(5):
        ads.learning.observe("r-east", _entry(slo_header="100", own_slo_ms=100, took_ms=120))
    clock.t += 1.0
    hub.version = 2
    rc = ads.region_config("r-east")
    i = route(rc.models, "summarize", 100).index  # type: ignore[union-attr]
    assert i is not None
    assert rc.models["summarize"].classes[i].order[0] == "big/s"
    assert "small/s" not in rc.models["summarize"].classes[i].feasible
    before = models["summarize"].classes[i]
    assert before.order[0] == "small/s"  # what the class was compiled to before the misses


def test_failed_calls_count_toward_the_rate_but_teach_no_margin() -> None:
    learning = RegionLearning(_FakeClock())
    learning.compiled("r-east", AdsServer(_Hub(), PROFILE, S).region_config(  # type: ignore[arg-type]
        "r-east").models)
    assert learning.observe("r-east", _entry(status="8", took_ms=900))
    assert not learning.observe("r-east", _entry(model=""))  # Envoy's own reply
    assert not learning.observe("r-east", _entry(model="translate"))  # no route for it
    assert (learning.calls, learning.unclassified) == (1, 1)
    learning.clock.t += 1.0  # type: ignore[attr-defined]
    learning.learned("r-east", {})
    learning.clock.t += 1.0  # type: ignore[attr-defined]
    got = learning.learned("r-east", {})
    assert got.rates[("summarize", None)] > 0 and got.margins[("summarize", None)] == {}


def test_slow_path_calls_reserve_their_backends_slots() -> None:
    ads, _, clock = _ads()
    ads.region_config("r-east")
    for _ in range(100):
        assert ads.learning.observe("r-east", _entry(model="", cluster="slow-path"))
    assert not ads.learning.observe("r-east", _entry(model="", cluster="slow-path", status="14"))
    clock.t += 10.0
    got = ads.learning.learned("r-east", {c.deployment_id: candidate_from_pb(c)
                                          for c in TABLE.candidates})
    assert got.reserved["small"] > 0 and "big" not in got.reserved
    assert got.rates == {}  # the slow path's calls are not the compiled classes' rate


async def test_the_access_log_sink_feeds_its_regions_learning() -> None:
    ads, _, _ = _ads()
    ads.region_config("r-east")

    async def reports(_: object) -> object:
        return None

    sink = AccessLogFeedback(reports, interval_s=60.0, min_samples=1)
    sink.learning = ads.learning
    msg = als_pb2.StreamAccessLogsMessage()
    msg.identifier.node.CopyFrom(base_pb2.Node(id="edge-1", cluster="r-east"))
    msg.http_logs.log_entry.extend([_entry(), _entry(), _entry(model="")])

    async def stream() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        yield msg

    await sink.StreamAccessLogs(stream(), None)
    assert ads.learning.calls == 2 and sink.entries == 3
    assert set(ads.learning.regions) == {"r-east"}


def test_between_publishes_a_region_is_recompiled_every_learn_every_s_while_it_learns() -> None:
    ads, hub, clock = _ads()
    plain = ads.region_config("r-east")
    clock.t += ads.learn_every_s  # nothing learned: no recompile, however long
    assert ads.region_config("r-east") is plain and not ads.relearn_due("r-east")
    hub.version = 2  # a publish: compiled now
    plain = ads.region_config("r-east")
    for _ in range(600):
        ads.learning.observe("r-east", _entry())
    clock.t += ads.learn_every_s / 2
    assert ads.region_config("r-east") is plain  # too soon: pushes stay coalesced
    clock.t += ads.learn_every_s / 2
    assert ads.relearn_due("r-east")
    split = ads.region_config("r-east")  # the hub did not publish (a steady fleet)
    assert hub.version == 2 and split is not plain
    assert _default_route(ads).route.weighted_clusters.clusters  # type: ignore[attr-defined]
    assert ads.region_config("r-east") is split and not ads.relearn_due("r-east")
    # Calls stop: the learned rate still decays at the same pace, back to one aggregate.
    for _ in range(30):
        clock.t += ads.learn_every_s
        _default_route(ads)
    assert _default_route(ads).route.cluster == model_cluster_name("summarize")  # type: ignore[attr-defined]
    clock.t += ads.learn_every_s
    assert not ads.relearn_due("r-east")  # decayed: no more recompiles until calls come
