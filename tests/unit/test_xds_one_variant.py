"""An aggregate cluster whose children all serve one variant carries no upstream Lua rewrite
(the listener's Lua already appended that variant: the route's first deployment is one of
them) and strips the listener's ``x-switchyard-named``; an order over two variants keeps the
per-attempt rewrite and the variant header it reads."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.xds import lua, rewrite
from services.xds.clusters import model_cluster
from services.xds.envoy_types import EnvoySettings

OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _upstream(ids: list[str]) -> list[dict[str, Any]]:
    c = json_format.MessageToDict(model_cluster("model:m", ids, EnvoySettings()),
                                  preserving_proto_field_name=True)
    filters: list[dict[str, Any]] = c["typed_extension_protocol_options"][OPTS]["http_filters"]
    return filters


def _request_mutations(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (hm,) = [f for f in filters if f["name"] == "switchyard.variant_header"]
    out: list[dict[str, Any]] = hm["typed_config"]["mutations"]["request_mutations"]
    return out


def test_one_variant_on_many_backends_has_no_upstream_lua() -> None:
    filters = _upstream(["a/small", "b/small", "c/small"])
    assert [f["name"] for f in filters] == ["switchyard.variant_header",
                                            "envoy.filters.http.upstream_codec"]
    assert _request_mutations(filters) == [{"remove": rewrite.NAMED_HEADER}]


def test_two_variants_keep_the_per_attempt_rewrite() -> None:
    filters = _upstream(["a/small", "b/large"])
    assert [f["name"] for f in filters] == ["switchyard.variant_header",
                                            "switchyard.variant_rewrite",
                                            "envoy.filters.http.upstream_codec"]
    (mutation,) = _request_mutations(filters)
    assert mutation["append"]["header"]["key"] == lua.VARIANT_HEADER
    rewrite_lua = filters[1]["typed_config"]["default_source_code"]["inline_string"]
    assert rewrite_lua == rewrite.VARIANT_REWRITE


def test_trailers_are_the_same_either_way() -> None:
    def trailers(ids: list[str]) -> list[dict[str, Any]]:
        (hm,) = [f for f in _upstream(ids) if f["name"] == "switchyard.variant_header"]
        out: list[dict[str, Any]] = hm["typed_config"]["mutations"][
            "response_trailers_mutations"]
        return out

    assert trailers(["a/small"]) == trailers(["a/small", "b/large"])
    assert len(trailers(["a/small"])) == 5
