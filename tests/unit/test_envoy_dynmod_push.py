"""Placement pushes the C dynamic module (native/switchyard_edge.c) to the Envoy edges that load
it: ``[edge] envoy_filters`` (auto, module, lua) decided where Envoy starts (``native.choose``,
``launcher.loads_module``), said in the bootstrap's node metadata, read by placement per node
(``native.node_loads_module``), which then pushes the module's listener filter in place of the
listener Lua; every route carries the flattened cost and feasibility the module reads."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import types
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from placement.registry import build_profile
from services.config import MeshConfig
from services.edge.envoy import launcher
from services.edge.envoy.bootstrap import EnvoyNode, bootstrap
from services.xds import clusters, lua, native, rewrite
from services.xds.envoy_types import Resource, resource
from services.xds.listener import listener
from services.xds.resources import CLUSTER, LISTENER, LISTENER_NAME, ROUTE, EnvoySettings
from services.xds.server import AdsServer
from tests.mesh_harness import mesh_config
from tests.native.envoy_host import FakeEnvoyHost, build
from tests.unit.test_envoy_dynmod import INFER, _listener, _request
from tests.unit.test_xds_server import _Hub

_FILTER = "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def _http_filters(msg: object) -> list[dict[str, object]]:
    d = json_format.MessageToDict(msg)  # type: ignore[arg-type]
    hcm = d["filterChains"][0]["filters"][0]["typedConfig"]
    return list(hcm["httpFilters"])


def test_auto_takes_the_module_when_it_loads_and_says_why_not_otherwise(
        tmp_path: pathlib.Path) -> None:
    assert native.choose("auto") == (True, f"{native.module_path()} loads (ABI v0.2.0)")
    assert native.choose("lua")[0] is False
    module, why = native.choose("auto", tmp_path)
    assert not module and "is not built" in why and str(tmp_path) in why
    with pytest.raises(ValueError, match=r"envoy_filters = 'module', but .* is not built"):
        native.choose("module", tmp_path)
    native.module_path(tmp_path).write_text("not a library")
    module, why = native.choose("auto", tmp_path)
    assert not module and "does not load" in why
    with pytest.raises(ValueError, match="one of auto, module, lua"):
        native.choose("yes")


def test_a_module_of_another_abi_is_not_loaded(tmp_path: pathlib.Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc builds the module and this test's stand-in"
    src = tmp_path / "old.c"
    src.write_text('const char* envoy_dynamic_module_on_program_init(void) { return "v0.1.0"; }\n')
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(native.module_path(tmp_path)), str(src)],
                   check=True)
    module, why = native.choose("auto", tmp_path)
    assert not module and "ABI b'v0.1.0'" in why and "rebuild it" in why


def test_the_bootstrap_says_so_and_placement_reads_it_per_node() -> None:
    plain = EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901)
    loads = EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901, module=True)
    for node, expected in ((plain, False), (loads, True)):
        as_sent = json_format.ParseDict(bootstrap(node, ["127.0.0.1:50050"])["node"],
                                        base_pb2.Node())
        assert native.node_loads_module(as_sent.metadata.fields) is expected
    assert native.NODE_KEY not in bootstrap(plain, ["127.0.0.1:50050"])["node"]["metadata"]


def test_a_module_node_gets_the_modules_listener_filter_and_a_lua_node_the_lua() -> None:
    s = EnvoySettings(max_metadata_bytes=8192, max_metadata_count=64, tenants=True)
    lua_filter, = [f for f in _http_filters(listener("127.0.0.1", 1, "r", s, True))
                   if f["name"] == lua.LISTENER_FILTER]
    assert "Lua" in str(lua_filter["typedConfig"]["@type"])  # type: ignore[index]
    dm, = [f for f in _http_filters(listener("127.0.0.1", 1, "r", s, True, module=True))
           if f["name"] == lua.LISTENER_FILTER]
    config = dm["typedConfig"]
    assert config["@type"].endswith(_FILTER)  # type: ignore[index]
    assert config["filterConfig"]["value"] == (  # type: ignore[index]
        "margin=5.0;slow=1;tenants=credential;max_message_bytes=16777216;"
        "max_metadata_bytes=8192;max_metadata_count=64")


def test_placement_caches_the_listener_per_node_and_filter_kind() -> None:
    ads = AdsServer(_Hub(), build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    lua_node = ads.offer("r", "127.0.0.1", 20000, 0, module=False)
    dm_node = ads.offer("r", "127.0.0.1", 20000, 0, module=True)
    assert lua_node[LISTENER][LISTENER_NAME] is ads.offer("r", "127.0.0.1", 20000)[LISTENER][
        LISTENER_NAME]
    kinds = [str(_http_filters(o[LISTENER][LISTENER_NAME].message)[0]["typedConfig"])
             for o in (lua_node, dm_node)]
    assert "lua.v3.Lua" in kinds[0] and _FILTER in kinds[1]


def test_the_launcher_starts_envoy_where_it_finds_the_module(tmp_path: pathlib.Path) -> None:
    cfg: MeshConfig = mesh_config(tmp_path)
    node, path = launcher.prepare(cfg, cfg.edges[0], placement=["127.0.0.1:1"],
                                  run_dir=tmp_path)
    assert node.module and '"envoy_filters": "module"' in path.read_text()
    env = launcher.envoy_env(node)
    assert env is not None and env[native.SEARCH_PATH_ENV] == str(native.BUILD_DIR)
    lua_cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(
        update={"envoy_filters": "lua"})})
    node, path = launcher.prepare(lua_cfg, cfg.edges[0], placement=["127.0.0.1:1"],
                                  run_dir=tmp_path, name="lua")
    assert not node.module and launcher.envoy_env(node) is None
    assert native.NODE_KEY not in path.read_text()


def test_a_modelinfers_own_slo_is_in_the_access_logs_metadata(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """As the Lua's dynamicMetadata():set("switchyard", "slo_ms", slo): placement's learning
    judges the call's miss by it (learning.py). Fails on the module before this change (it
    set no dynamic metadata, so an Envoy running it logged every call at its class's SLO)."""
    host = FakeEnvoyHost(build(tmp_path_factory.mktemp("dm-push")))
    _listener(host).start({":path": INFER, "x-slo-ms": "1.5"}, _request("tiny"))
    host.request_headers()
    host.request_body()
    assert host.dynamic(lua.METADATA_NAMESPACE, "slo_ms") == 1.5
    _listener(host).start({":path": INFER, "grpc-timeout": "100m"}, _request("tiny"))
    host.request_headers()
    host.request_body()
    assert host.dynamic(lua.METADATA_NAMESPACE, "slo_ms") == 95.0  # the deadline less 5 ms
    _listener(host).start({":path": INFER}, _request("tiny"))
    host.request_headers()
    host.request_body()
    assert host.dynamic(lua.METADATA_NAMESPACE, "slo_ms") is None  # the route's class


def test_preflight_refuses_module_where_it_does_not_load(tmp_path: pathlib.Path) -> None:
    from placement.errors import ConfigError
    from services.cli_preflight import check_envoy_filters

    cfg = mesh_config(tmp_path)
    envoy = cfg.model_copy(update={"edge": cfg.edge.model_copy(
        update={"engine": "envoy", "envoy_filters": "module"})})
    check_envoy_filters(envoy, "mesh.toml")  # built here: passes
    with pytest.raises(ConfigError, match=r"is not built.*run native/build\.sh"):
        check_envoy_filters(envoy, "mesh.toml", tmp_path)
    check_envoy_filters(cfg.model_copy(update={"edge": cfg.edge.model_copy(
        update={"envoy_filters": "module"})}), "mesh.toml", tmp_path)  # a Python edge


def _upstream_filters(r: Resource) -> list[str]:
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    opts = http_protocol_options_pb2.HttpProtocolOptions()
    r.message.typed_extension_protocol_options[  # type: ignore[attr-defined]
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    return [f"{f.name}:{f.typed_config.type_url.rsplit('.', 1)[-1]}" for f in opts.http_filters]


def _header_mutation(r: Resource) -> dict[str, Any]:
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    opts = http_protocol_options_pb2.HttpProtocolOptions()
    r.message.typed_extension_protocol_options[  # type: ignore[attr-defined]
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    f = next(f for f in opts.http_filters if f.name == native.HEADER_FILTER)
    got: dict[str, Any] = json_format.MessageToDict(
        f, preserving_proto_field_name=True)["typed_config"]["mutations"]
    return got


def test_a_module_node_gets_the_modules_upstream_rewrite_on_aggregates_over_two_variants(
        ) -> None:
    """...and no upstream filter chain on an aggregate over one variant, the header_mutation
    without its response trailers on one over two (the module's listener adds them,
    ``native/response.c`` ``served_trailers``): fails on the ModuleClusters before, which left
    an aggregate over one variant as the Lua nodes get it."""
    s = EnvoySettings()
    two = resource("model:m", clusters.model_cluster("model:m", ["a/m-v1", "b/m-v2"], s))
    one = resource("model:n", clusters.model_cluster("model:n", ["a/n-v1", "b/n-v1"], s))
    region = {"model:m": two, "model:n": one}
    assert "switchyard.variant_rewrite:Lua" in _upstream_filters(two)
    mc = native.ModuleClusters()
    got = mc.offer(("r", 0), region)
    assert "switchyard.variant_rewrite:DynamicModuleFilter" in _upstream_filters(got["model:m"])
    assert [f.split(":")[0] for f in _upstream_filters(got["model:m"])] == [
        f.split(":")[0] for f in _upstream_filters(two)]  # in the Lua's place
    assert got["model:m"].version != two.version
    mutation = _header_mutation(got["model:m"])
    assert "response_trailers_mutations" not in mutation
    assert mutation["request_mutations"] == _header_mutation(two)["request_mutations"]
    assert _upstream_filters(got["model:n"]) == []  # one variant: no upstream chain at all
    assert got["model:n"].version != one.version
    assert "response_trailers_mutations" in _header_mutation(one)  # Lua nodes' untouched
    assert mc.offer(("r", 0), region) is got  # the same compile: the same offer
    again = mc.offer(("r", 0), dict(region))  # a new compile, these clusters unchanged
    assert again["model:m"] is got["model:m"]
    assert region["model:m"] is two  # what Lua nodes are offered is left alone


def test_placement_offers_module_nodes_the_swapped_clusters_and_lua_nodes_the_region_s(
        ) -> None:
    ads = AdsServer(_Hub(), build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    lua_node = ads.offer("r", "127.0.0.1", 20000, 7000)
    dm_node = ads.offer("r", "127.0.0.1", 20001, 7000, module=True)
    assert set(lua_node[CLUSTER]) == set(dm_node[CLUSTER])
    assert lua_node[ROUTE] is dm_node[ROUTE]  # routes are the region's, for both


def test_the_listener_resolves_the_route_for_the_name_before_reading_its_first_variant(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Envoy reads route metadata from the route last resolved: after clearing the route cache
    the module must have Envoy resolve it again (get_cluster_name) before it reads the first
    variant, as the Lua's handle:metadata() does (test_envoy_dynmod's
    test_the_listener_alone_names_the_first_variant_in_the_body in the real Envoy)."""
    host = FakeEnvoyHost(build(tmp_path_factory.mktemp("dm-route")))
    _listener(host).start({":path": INFER}, _request("tiny"))
    host.metadata(lua.LISTENER_FILTER, "first_variant", "tiny-v1")
    host.request_headers()
    before = host.lib.fh_resolved()
    host.request_body()
    assert host.cleared() == 1 and host.lib.fh_resolved() == before + 1
    assert host.header("x-switchyard-named") == "tiny-v1"


def test_a_route_over_one_variant_sends_the_backend_no_named_header(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A module node's one-variant aggregate runs no upstream filter that would remove
    ``x-switchyard-named``: where the route's metadata says every deployment it reaches serves
    the first variant, the listener appends that variant to the body and sets no header, so
    Triton is sent none (before, it was, on every such call)."""
    lib = build(tmp_path_factory.mktemp("dm-one"))
    for one, named in ((True, None), (False, "tiny-v1")):
        host = FakeEnvoyHost(lib)
        _listener(host).start({":path": INFER}, _request("tiny"))
        host.metadata(lua.LISTENER_FILTER, "first_variant", "tiny-v1")
        host.metadata(lua.LISTENER_FILTER, rewrite.ONE_VARIANT_KEY, one)
        host.request_headers()
        host.request_body()
        assert host.header(rewrite.NAMED_HEADER) == named
        assert host.body().endswith(b"\n\x07tiny-v1")  # the variant is named either way
        host.finish()


def test_route_metadata_says_one_variant_only_when_every_reachable_deployment_serves_it(
        ) -> None:
    from services.xds.routes import _trailer_metadata

    m = types.SimpleNamespace(cost_usd={"a/v1": 1.0, "b/v1": 2.0, "c/v2": 0.5},
                              rotations={None: [(1.0, ["c/v2"])]})
    ns = lua.LISTENER_FILTER

    def data(order: list[str], klass: int | None) -> dict[str, Any]:
        md = _trailer_metadata(m, frozenset(m.cost_usd), None, order, klass)  # type: ignore[arg-type]
        out: dict[str, Any] = md["metadata"]["filter_metadata"][ns]
        return out

    assert data(["a/v1", "b/v1"], 0)[rewrite.ONE_VARIANT_KEY] is True
    assert rewrite.ONE_VARIANT_KEY not in data(["a/v1", "c/v2"], 0)
    assert rewrite.ONE_VARIANT_KEY not in data(["a/v1", "b/v1"], None)  # a rotation reaches v2


def test_module_nodes_keep_the_sessions_delta_shortcut() -> None:
    """The region's last change of clusters as a module node is offered them: the same names
    changed and gone, between the swapped dicts it was offered (else every push to a module
    node walked every cluster, the shortcut lost at fleet scale)."""
    import types

    from services.xds.session import Delta

    s = EnvoySettings()
    old = {"model:m": resource("model:m", clusters.model_cluster("model:m", ["a/m-v1", "b/m-v2"],
                                                                   s))}
    new = {"model:m": resource("model:m", clusters.model_cluster("model:m", ["b/m-v2", "a/m-v1"],
                                                                   s)),
           "model:n": resource("model:n", clusters.model_cluster("model:n", ["a/n-v1"], s))}
    ads = AdsServer(_Hub(), build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]
    ads._compiled["r"] = types.SimpleNamespace(delta=Delta.between(old, new))  # type: ignore
    first = ads._module_clusters.offer(("r", 0), old)
    second = ads._module_clusters.offer(("r", 0), new)
    d = ads.cluster_delta("r", 0, second, module=True)
    assert d is not None and d.before is first and d.after is second
    assert (d.changed, d.gone) == (("model:m", "model:n"), ())
    assert ads.cluster_delta("r", 0, dict(second), module=True) is None  # not what it offered
