"""The Envoy CPU ablation (``benchmarks/envoy_ablation.py``): each variant is a valid bootstrap
that differs from the whole Switchyard config by what it names, ``sy`` is the listener as
placement pushes it, the before/after export compiles, and the ablation table's arithmetic."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from benchmarks import envoy_ablation as ab
from benchmarks import envoy_configs as ec
from benchmarks import envoy_filters as ef
from benchmarks._load import Point
from benchmarks.envoy_before import bootstrap_from
from services.xds import lua, resources

ARGS = ("127.0.0.1:9001", "127.0.0.1:9002", 9003, 9004)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _boot(name: str) -> dict[str, Any]:
    return ec.VARIANTS[name].bootstrap(*ARGS) if name in ec.VARIANTS else {
        v.name: v for v in ab.ABLATIONS}[name].bootstrap(*ARGS)


def _listener(boot: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = boot["static_resources"]["listeners"][0]
    return out


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _listener(boot)["filter_chains"][0]["filters"][0]["typed_config"]
    return out


def _clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _routes(boot: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = _hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]
    return out


@pytest.mark.parametrize("name", [v.name for v in ab.ABLATIONS])
def test_every_ablation_is_a_valid_bootstrap_unlike_the_whole(name: str) -> None:
    boot = _boot(name)
    json_format.ParseDict(boot, bootstrap_pb2.Bootstrap())
    assert boot != _boot("sy")


def test_sy_is_the_listener_placement_pushes() -> None:
    pushed = json_format.MessageToDict(
        resources.listener("127.0.0.1", 9003, "r", ec.SETTINGS),
        preserving_proto_field_name=True)
    hcm = _hcm(_boot("sy"))
    pushed_hcm = pushed["filter_chains"][0]["filters"][0]["typed_config"]
    for key in ("http2_protocol_options", "local_reply_config", "access_log", "http_filters"):
        assert hcm[key] == pushed_hcm[key], key
    assert (_listener(_boot("sy"))["per_connection_buffer_limit_bytes"]
            == pushed["per_connection_buffer_limit_bytes"])


def test_each_removal_removes_its_piece() -> None:
    assert "access_log" not in _hcm(_boot("sy-no-als"))
    common = _hcm(_boot("sy-als-batch"))["access_log"][0]["typed_config"]["common_config"]
    assert common["buffer_size_bytes"] == 1 << 20
    agg = ec.AGG_CLUSTER

    def upstream(name: str) -> list[str]:
        return [f["name"] for f in _clusters(_boot(name))[agg][
            "typed_extension_protocol_options"][ec.PROTOCOL_OPTIONS]["http_filters"]]

    assert ab.UPSTREAM_LUA not in upstream("sy")  # one variant: the listener names it
    assert ab.UPSTREAM_LUA in upstream("sy-2var")
    assert ab.HEADER_MUTATION not in upstream("sy-no-hdrmut")
    direct = _boot("sy-direct")
    assert agg not in _clusters(direct)
    assert {r["route"]["cluster"] for r in _routes(direct) if "route" in r
            and r["route"].get("cluster") != resources.SLOW_PATH_CLUSTER} == {ec.DEP_CLUSTER}
    assert all("retry_policy" not in r.get("route", {}) for r in _routes(_boot("sy-no-retry")))
    assert "outlier_detection" not in _clusters(_boot("sy-no-outlier"))[ec.DEP_CLUSTER]
    assert _hcm(_boot("sy-no-reqid"))["generate_request_id"] is False
    assert len(_routes(_boot("sy-routes100"))) == len(_routes(_boot("sy"))) + 100
    resp = _hcm(_boot("sy-no-resp"))["http_filters"][0]["typed_config"]
    assert "envoy_on_response" not in resp["default_source_code"]["inline_string"]
    assert _hcm(_boot("sy-no-resp"))["http_filters"][0]["name"] == lua.LISTENER_FILTER


def test_the_before_export_compiles_the_same_sy_from_the_same_tree() -> None:
    assert bootstrap_from(ROOT, *ARGS) == _boot("sy")


def test_a_tree_without_services_fails_loudly(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RuntimeError, match="did not compile"):
        bootstrap_from(tmp_path, *ARGS)


def _point(name: str, conc: int, cpu: float) -> Point:
    return Point(name, conc, 1000, 0, 1.0, 1000.0, 1.0, 2.0, cpu, float("nan"))


def test_saved_is_the_difference_to_sy_in_plain_units_same_round() -> None:
    rounds = [{("plain", 1): _point("plain", 1, 100), ("sy", 1): _point("sy", 1, 200),
               ("sy-no-als", 1): _point("sy-no-als", 1, 150)},
              {("plain", 1): _point("plain", 1, 200), ("sy", 1): _point("sy", 1, 300),
               ("sy-no-als", 1): _point("sy-no-als", 1, 320)}]
    assert ef._saved(rounds, "sy-no-als", 1) == [0.5, -0.1]
    rows = ef.ablation_rows(rounds, (1,))
    assert [r[0] for r in rows] == ["sy-no-als"]
    assert rows[0][-1] == "1/2"
    assert rows[0][2] == "1.55 (1.50–1.60)"


def test_the_pushed_router_skips_dynamic_stats_and_envoy_headers() -> None:
    (router,) = [f for f in _hcm(_boot("sy"))["http_filters"]
                 if f["name"] == "envoy.filters.http.router"]
    assert router["typed_config"]["dynamic_stats"] is False
    assert router["typed_config"]["suppress_envoy_headers"] is True
    (default,) = [f for f in _hcm(_boot("sy-router-dflt"))["http_filters"]
                  if f["name"] == "envoy.filters.http.router"]
    assert "dynamic_stats" not in default["typed_config"]
