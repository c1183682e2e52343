"""The per-filter benchmark's Envoy bootstraps: each is a valid Bootstrap, and each variant
switches on what it says (and only that) against plain Envoy."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.grpc_field_extraction.v3 import (  # noqa: F401
    config_pb2 as _gfe_pb2,
)
from google.protobuf import json_format

from benchmarks import envoy_configs as ec
from benchmarks import envoy_extract
from services.xds import lua, rewrite

TRITON, PLACEMENT = "127.0.0.1:9001", "127.0.0.1:9002"


def _boot(name: str) -> dict[str, Any]:
    return ec.VARIANTS[name].bootstrap(TRITON, PLACEMENT, 9003, 9004)


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = (boot["static_resources"]["listeners"][0]["filter_chains"][0]
                           ["filters"][0]["typed_config"])
    return hcm


def _filters(boot: dict[str, Any]) -> list[str]:
    return [f["name"] for f in _hcm(boot)["http_filters"]]


def _clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _upstream_filters(cluster: dict[str, Any]) -> list[str]:
    opts = cluster["typed_extension_protocol_options"][ec.PROTOCOL_OPTIONS]
    return [f["name"] for f in opts.get("http_filters", [])]


@pytest.mark.parametrize("name", sorted(ec.VARIANTS))
def test_every_variant_is_a_valid_envoy_bootstrap(name: str) -> None:
    json_format.ParseDict(_boot(name), bootstrap_pb2.Bootstrap())


def test_plain_envoy_has_only_the_router_one_route_and_no_access_log() -> None:
    boot = _boot("plain")
    assert _filters(boot) == ["envoy.filters.http.router"]
    assert "access_log" not in _hcm(boot)
    assert _upstream_filters(_clusters(boot)[ec.DEP_CLUSTER]) == []


def test_each_piece_switches_on_its_own_piece_only() -> None:
    assert _filters(_boot("lua-peek")) == ["switchyard.model_name", "envoy.filters.http.router"]
    assert _upstream_filters(_clusters(_boot("lua-peek"))[ec.DEP_CLUSTER]) == []
    up = _clusters(_boot("up-lua"))[ec.DEP_CLUSTER]
    assert _upstream_filters(up) == ["switchyard.variant_rewrite",
                                     "envoy.filters.http.upstream_codec"]
    assert _filters(_boot("up-lua")) == ["envoy.filters.http.router"]
    assert "access_log" in _hcm(_boot("als"))
    assert _filters(_boot("als")) == ["envoy.filters.http.router"]
    agg = _clusters(_boot("aggregate"))[ec.AGG_CLUSTER]
    assert _upstream_filters(agg) == []


def test_the_hints_only_lua_returns_before_touching_the_body() -> None:
    script = ec.hints_only_script()
    assert script.index("do return end") < script.index("handle:body()")
    assert "envoy_on_response" not in ec.request_only_script()


def test_the_extraction_alternative_routes_on_the_extracted_name() -> None:
    boot = _boot("gfe")
    assert _filters(boot)[0] == "switchyard.model_name_extraction"
    route = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"]["dynamic_metadata"] == [envoy_extract.model_matcher(ec.VARIANT)]
    assert "handle:body()" not in envoy_extract.hints_script(5.0).split(
        "function envoy_on_request")[1]


def test_switchyard_first_variant_appends_in_the_listener_and_checks_upstream() -> None:
    boot = _boot("sy-first")
    listener_lua = _hcm(boot)["http_filters"][0]["typed_config"]["default_source_code"][
        "inline_string"]
    assert rewrite.FIRST_VARIANT_KEY in listener_lua
    agg = _clusters(boot)[ec.AGG_CLUSTER]
    opts = agg["typed_extension_protocol_options"][ec.PROTOCOL_OPTIONS]
    upstream = {f["name"]: f for f in opts["http_filters"]}
    assert upstream["switchyard.variant_rewrite"]["typed_config"]["default_source_code"][
        "inline_string"] == rewrite.VARIANT_REWRITE
    routes = _hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]
    firsts = [r["metadata"]["filter_metadata"][lua.LISTENER_FILTER][rewrite.FIRST_VARIANT_KEY]
              for r in routes if r.get("route", {}).get("cluster") == ec.AGG_CLUSTER]
    assert firsts and set(firsts) == {ec.VARIANT}
