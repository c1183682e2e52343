"""The C dynamic module (native/switchyard_edge.c) hook by hook against a FAKE Envoy host
(tests/native/fake_envoy_host.c): what the listener Lua does (lua.py, rewrite.py), in C.
The module inside the real Envoy binary: tests/integration/test_envoy_dynmod.py."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.dynamic_modules.v3 import dynamic_modules_pb2 as _dm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf import wrappers_pb2 as _wrappers_pb2  # noqa: F401

from benchmarks import envoy_configs as ec
from benchmarks.envoy_dynmod import DM_VARIANTS
from placement.errors import InvalidRequest
from services.edge import wire
from services.xds import lua, native, rewrite
from tests.native.envoy_host import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    RESPONSE_TRAILER,
    FakeEnvoyHost,
    build,
)

INFER = lua.INFER_PATH
CONTINUE, STOP = 0, 1


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> FakeEnvoyHost:
    return FakeEnvoyHost(build(tmp_path_factory.mktemp("dm")))


def _listener(host: FakeEnvoyHost, slow: bool = False) -> FakeEnvoyHost:
    assert host.new_config("listener", f"margin=5.0;slow={int(slow)}")
    return host


def _frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


def _request(name: str, extra: bytes = b"") -> bytes:
    return _frame(wire.encode_name_field(name) + b"\x12\x02v1" + extra)


def test_the_module_reports_the_abi_version_of_the_pinned_envoy(host: FakeEnvoyHost) -> None:
    assert host.abi_version() == "v0.2.0"


def test_an_unknown_filter_name_is_refused(host: FakeEnvoyHost) -> None:
    assert not host.new_config("listner")


def test_the_model_name_is_routed_on_and_a_callers_own_headers_removed(
        host: FakeEnvoyHost) -> None:
    _listener(host).start({":path": INFER, lua.MODEL_HEADER: "forged", lua.PATH_HEADER: "slow"},
                          _request("tiny"))
    assert host.request_headers() == STOP  # waits for the body
    assert host.header(lua.MODEL_HEADER) is None and host.header(lua.PATH_HEADER) is None
    assert host.request_body() == CONTINUE
    assert host.header(lua.MODEL_HEADER) == "tiny"
    assert host.cleared() == 1
    assert host.reply() is None


@pytest.mark.parametrize(("timeout", "keyed"), [(None, 0), ("80m", 1)])
def test_a_plain_call_walks_its_headers_once_and_asks_envoy_for_no_key(
        host: FakeEnvoyHost, timeout: str | None, keyed: int) -> None:
    """A ModelInfer as a gRPC client sends it (no hint, no x-switchyard-* header): the
    listener's checks read the one copy of the header list; the only per-key callback is the
    x-switchyard-slo-ms it sets from a deadline (each is a lookup in Envoy's map; before,
    15 per call, 16 with a deadline: :path twice, five removals, five slow hints, x-slo-ms,
    grpc-timeout)."""
    headers = {":method": "POST", ":scheme": "http", ":path": INFER, ":authority": "edge",
               "te": "trailers", "user-agent": "grpc-python/1.70", "x-request-id": "r1",
               "grpc-accept-encoding": "identity,deflate,gzip"}
    if timeout:
        headers["grpc-timeout"] = timeout
    _listener(host).start(headers, _request("tiny"))
    assert host.request_headers() == STOP
    assert host.keyed() == keyed
    assert host.header(lua.SLO_HEADER) == (None if timeout is None else "75")
    assert host.request_body() == CONTINUE and host.reply() is None
    assert host.header(lua.MODEL_HEADER) == "tiny"


def test_the_last_field_one_wins_as_in_a_protobuf_parser(host: FakeEnvoyHost) -> None:
    body = _frame(wire.encode_name_field("a") + wire.encode_name_field("b"))
    _listener(host).start({":path": INFER}, body)
    host.request_headers()
    host.request_body()
    assert host.header(lua.MODEL_HEADER) == "b" == wire.scan_model_name(body[5:])


def test_a_body_split_between_buffered_and_received_is_read_whole(host: FakeEnvoyHost) -> None:
    body = _request("split-model")
    _listener(host).start({":path": INFER}, body[9:], buffered=body[:9])
    host.request_headers()
    assert host.request_body() == CONTINUE
    assert host.header(lua.MODEL_HEADER) == "split-model"


@pytest.mark.parametrize("message", [
    b"\x0a\x05ab",  # truncated field
    b"\x0a",  # truncated varint
    b"\x02\x01",  # field number 0
    b"\x0b\x01",  # wire type 3
    b"\x12\x02v1",  # no name
    b"\x0a\x00",  # empty name
    b"\x0d\x01\x02",  # truncated fixed32
])
def test_bytes_the_walk_cannot_read_are_invalid_argument_as_in_python(
        host: FakeEnvoyHost, message: bytes) -> None:
    with pytest.raises(InvalidRequest):
        wire.scan_model_name(message)
    _listener(host).start({":path": INFER}, _frame(message))
    host.request_headers()
    host.request_body()
    reply = host.reply()
    assert reply is not None and reply[0] == 3, reply
    assert host.header(lua.MODEL_HEADER) is None


def test_a_compressed_request_is_unimplemented_and_a_missing_body_invalid(
        host: FakeEnvoyHost) -> None:
    _listener(host).start({":path": INFER}, _frame(b"\x0a\x01a", compressed=True))
    host.request_headers()
    host.request_body()
    assert host.reply() == (12, "compressed requests are not routed by the Envoy edge; "
                                "send them uncompressed")
    _listener(host).start({":path": INFER})
    assert host.request_headers(end_of_stream=True) == STOP
    reply = host.reply()
    assert reply is not None and reply[0] == 3 and "(no body)" in reply[1]


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-slo-ms": "250.9"}, "250"),
    ({"grpc-timeout": "2S"}, "1995"),
    ({"grpc-timeout": "3m"}, "1"),
    ({}, None),
])
def test_the_slo_class_header_is_whole_ms_rounded_down(
        host: FakeEnvoyHost, headers: dict[str, str], expected: str | None) -> None:
    _listener(host).start({":path": INFER, **headers}, _request("m"))
    host.request_headers()
    assert host.header(lua.SLO_HEADER) == expected


@pytest.mark.parametrize(("value", "why"), [
    ("fast", "x-slo-ms='fast': not a number"),
    ("0", "x-slo-ms='0': must be between 0.001 and 3.6e+06"),
    (["100", "200"], "x-slo-ms='200': contradicts an earlier x-slo-ms='100'"),
])
def test_a_bad_slo_is_invalid_argument_with_the_python_edges_words(
        host: FakeEnvoyHost, value: str | list[str], why: str) -> None:
    _listener(host).start({":path": INFER, "x-slo-ms": value}, _request("m"))
    assert host.request_headers() == STOP and host.reply() is None
    host.request_body()  # a ModelInfer's hints are answered after its bytes, as on Python
    reply = host.reply()
    assert reply is not None and reply[0] == 3 and why in reply[1], reply


def test_hints_take_the_slow_path_or_are_refused_without_one(host: FakeEnvoyHost) -> None:
    _listener(host, slow=True).start({":path": INFER, "x-max-cost-usd": "0.1"}, _request("m"))
    assert host.request_headers() == CONTINUE
    assert host.header(lua.PATH_HEADER) == "slow" and host.cleared() == 1
    _listener(host, slow=False).start({":path": INFER, "x-max-cost-usd": "0.1"}, _request("m"))
    assert host.request_headers() == STOP
    reply = host.reply()
    assert reply is not None and reply[0] == 12 and "hint x-max-cost-usd" in reply[1]


@pytest.mark.parametrize(("tenants", "headers", "slow"), [
    ("credential", {"authorization": "Bearer k"}, True),
    ("credential", {"x-tenant": "acme"}, True),
    # as -bin: the slow path refuses it UNAUTHENTICATED (before: served as no tenant)
    ("credential", {"authorization-bin": "QmVhcmVyIGs="}, True),
    ("credential", {"x-tenant-bin": "YWNtZQ=="}, True),
    ("credential", {}, False),
    ("all", {}, True),
    ("off", {"authorization": "Bearer k"}, False),
])
def test_tenants_calls_go_to_the_slow_paths_gate_as_configured(
        host: FakeEnvoyHost, tenants: str, headers: dict[str, str], slow: bool) -> None:
    assert host.new_config("listener", f"margin=5.0;slow=1;tenants={tenants}")
    host.start({":path": INFER, **headers}, _request("m"))
    assert host.request_headers() == (CONTINUE if slow else STOP)
    assert (host.header(lua.PATH_HEADER) == "slow") is slow


def test_an_unknown_tenants_mode_is_refused_in_python() -> None:
    with pytest.raises(ValueError, match="tenants="):
        native.listener_filter(5.0, True, tenants="some")


def test_streams_go_to_the_slow_path_and_other_rpcs_pass_untouched(host: FakeEnvoyHost) -> None:
    _listener(host, slow=True).start({":path": lua.SERVICE_PATH + "ModelStreamInfer"})
    assert host.request_headers() == CONTINUE and host.header(lua.PATH_HEADER) == "slow"
    _listener(host).start({":path": "/grpc.health.v1.Health/Check"})
    assert host.request_headers() == CONTINUE
    assert host.header(lua.PATH_HEADER) is None and host.cleared() == 0


def test_the_first_variant_is_appended_once_and_named(host: FakeEnvoyHost) -> None:
    body = _request("tiny")
    _listener(host).start({":path": INFER}, body)
    host.metadata(lua.LISTENER_FILTER, rewrite.FIRST_VARIANT_KEY, "tiny-v1")
    host.request_headers()
    host.request_body()
    out = host.body()
    assert out == _frame(body[5:] + wire.encode_name_field("tiny-v1"))
    assert wire.scan_model_name(out[5:]) == "tiny-v1"
    assert host.header(rewrite.NAMED_HEADER) == "tiny-v1"
    assert host.header(lua.MODEL_HEADER) == "tiny"  # the route still matches the model


def test_a_second_message_is_dropped_with_the_first_variant_appended(
        host: FakeEnvoyHost) -> None:
    """gRPC reads a unary call's first message; before, the second's prefix ended up inside
    the first and Triton could not parse the call."""
    body = _request("tiny")
    _listener(host).start({":path": INFER}, body + _request("other"))
    host.metadata(lua.LISTENER_FILTER, rewrite.FIRST_VARIANT_KEY, "tiny-v1")
    host.request_headers()
    host.request_body()
    assert host.body() == _frame(body[5:] + wire.encode_name_field("tiny-v1"))


def test_no_append_when_the_body_already_names_the_first_variant(host: FakeEnvoyHost) -> None:
    body = _request("tiny-v1")
    _listener(host).start({":path": INFER}, body)
    host.metadata(lua.LISTENER_FILTER, rewrite.FIRST_VARIANT_KEY, "tiny-v1")
    host.request_headers()
    host.request_body()
    assert host.body() == body and host.header(rewrite.NAMED_HEADER) is None


def test_upstream_the_body_changes_only_for_another_variant(host: FakeEnvoyHost) -> None:
    assert host.new_config("rewrite")
    body = _request("tiny")
    host.start({lua.MODEL_HEADER: "tiny", rewrite.NAMED_HEADER: "tiny-v1",
                lua.VARIANT_HEADER: "tiny-v1"}, body)
    assert host.request_headers() == CONTINUE  # already named: the body is not even buffered
    assert host.body() == body and host.header(lua.VARIANT_HEADER) is None
    host.start({lua.MODEL_HEADER: "tiny", rewrite.NAMED_HEADER: "tiny-v1",
                lua.VARIANT_HEADER: "tiny-v2"}, body)
    assert host.request_headers() == STOP
    assert host.request_body() == CONTINUE
    assert wire.scan_model_name(host.body()[5:]) == "tiny-v2"
    assert host.header(rewrite.NAMED_HEADER) is None


def _served(host: FakeEnvoyHost, slo_ms: str | None) -> None:
    headers = {":path": INFER, **({"x-slo-ms": slo_ms} if slo_ms else {})}
    _listener(host).start(headers, _request("tiny"))
    host.metadata(native.COST_NAMESPACE, "b/tiny-v1", "0.0000002500")
    host.metadata(native.FEASIBLE_NAMESPACE, "b/tiny-v1", True)
    host.metadata(lua.LISTENER_FILTER, "slo_ms", 1000.0)
    host.request_headers()
    host.request_body()


SERVED = {"deployment": "b/tiny-v1", "region": "aws-us-east-1", "variant": "tiny-v1"}


def test_an_ok_answer_gets_cost_and_slo_met_trailers(host: FakeEnvoyHost) -> None:
    _served(host, None)
    host.served_by(SERVED)
    host.response({":status": "200"}, {"grpc-status": "0"})
    assert host.header("x-cost-usd", RESPONSE_TRAILER) == "0.0000002500"
    assert host.header("x-slo-met", RESPONSE_TRAILER) == "true"


def test_an_answer_from_a_deployment_gets_the_python_edges_served_trailers(
        host: FakeEnvoyHost) -> None:
    """What the aggregate's upstream header_mutation added on every attempt, now from the
    answering host's metadata once: fails on the module before (no such trailers)."""
    _served(host, None)
    host.lib.fh_add_header(REQUEST_HEADER, b"x-request-id", b"rid-7")
    host.served_by(SERVED, attempted=2)
    host.response({":status": "200"}, {"grpc-status": "14", "x-served-by": "stale"})
    assert host.header("x-served-by", RESPONSE_TRAILER) == "b/tiny-v1"
    assert host.header("x-served-region", RESPONSE_TRAILER) == "aws-us-east-1"
    assert host.header("x-attempts", RESPONSE_TRAILER) == "2"
    assert host.header("x-request-id", RESPONSE_TRAILER) == "rid-7"
    assert host.header(lua.PATH_TRAILER, RESPONSE_TRAILER) == "envoy"


def test_an_answer_from_no_deployment_gets_no_served_trailers(host: FakeEnvoyHost) -> None:
    """The slow path's host (no switchyard metadata) keeps the trailers its own cluster and
    the Python edge gave."""
    _served(host, None)
    host.response({":status": "200"}, {"grpc-status": "0", "x-switchyard-path": "slow"})
    assert host.header("x-served-by", RESPONSE_TRAILER) is None
    assert host.header(lua.PATH_TRAILER, RESPONSE_TRAILER) == "slow"
    assert host.header("x-cost-usd", RESPONSE_TRAILER) is None


def test_an_slo_no_answer_could_meet_is_reported_missed(host: FakeEnvoyHost) -> None:
    _served(host, "0.001")
    host.served_by(SERVED)
    host.response({":status": "200"}, {"grpc-status": "0"})
    assert host.header("x-slo-met", RESPONSE_TRAILER) == "false"


def test_errors_and_unknown_deployments_get_no_cost_trailers(host: FakeEnvoyHost) -> None:
    _served(host, None)
    host.served_by(SERVED)
    host.response({":status": "200"}, {"grpc-status": "14"})
    assert host.header("x-cost-usd", RESPONSE_TRAILER) is None
    _served(host, None)
    host.served_by({**SERVED, "deployment": "elsewhere"})
    host.response({":status": "200"}, {"grpc-status": "0"})
    assert host.header("x-cost-usd", RESPONSE_TRAILER) is None


def test_a_trailers_only_answer_carries_the_routes_path(host: FakeEnvoyHost) -> None:
    _listener(host).start({":path": INFER}, _request("tiny"))
    host.metadata(lua.LISTENER_FILTER, "path", "envoy")
    host.request_headers()
    host.request_body()
    host.response({":status": "200", "grpc-status": "14"}, {})
    assert host.header(lua.PATH_TRAILER, RESPONSE_HEADER) == "envoy"


# --- the config the benchmark and placement would push ---------------------------------------

def test_the_filters_parse_as_envoy_config() -> None:
    for f in (native.listener_filter(5.0, True), native.rewrite_filter()):
        msg = json_format.ParseDict(f, hcm_pb2.HttpFilter())
        inner = _dm_pb2.DynamicModuleFilter()
        assert msg.typed_config.Unpack(inner)
        assert inner.dynamic_module_config.name == native.MODULE_NAME
    assert "slow=1" in native.listener_filter(5.0, True)["typed_config"]["filter_config"]["value"]
    boot = DM_VARIANTS[1].bootstrap("127.0.0.1:1", "127.0.0.1:2", 3, 4)
    json_format.ParseDict(boot, bootstrap_pb2.Bootstrap())


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = (boot["static_resources"]["listeners"][0]["filter_chains"][0]
                           ["filters"][0]["typed_config"])
    return hcm


def test_sy_dm_swaps_only_the_two_lua_filters_and_flattens_cost() -> None:
    sy = ec.VARIANTS["sy"].bootstrap("127.0.0.1:1", "127.0.0.1:2", 3, 4)
    dm = DM_VARIANTS[1].bootstrap("127.0.0.1:1", "127.0.0.1:2", 3, 4)
    assert [f["name"] for f in _hcm(sy)["http_filters"]] == \
        [f["name"] for f in _hcm(dm)["http_filters"]]
    types = {f["typed_config"]["@type"].rsplit(".", 1)[-1] for f in _hcm(dm)["http_filters"]}
    assert "Lua" not in types and "DynamicModuleFilter" in types
    agg = {c["name"]: c for c in dm["static_resources"]["clusters"]}[ec.AGG_CLUSTER]
    up = agg["typed_extension_protocol_options"][ec.PROTOCOL_OPTIONS]["http_filters"]
    assert all("Lua" not in f["typed_config"]["@type"] for f in up)
    routes = _hcm(dm)["route_config"]["virtual_hosts"][0]["routes"]
    md = [r["metadata"]["filter_metadata"] for r in routes
          if "cost" in r.get("metadata", {}).get("filter_metadata", {}).get(
              lua.LISTENER_FILTER, {})]
    assert md and all(m[native.COST_NAMESPACE] == m[lua.LISTENER_FILTER]["cost"] for m in md)
    assert all(set(m[native.FEASIBLE_NAMESPACE]) == set(m[lua.LISTENER_FILTER]["feasible"])
               for m in md)


def test_the_module_is_found_where_envoy_will_look(tmp_path: pathlib.Path) -> None:
    assert not native.available(tmp_path)
    (tmp_path / "libswitchyard_edge.so").write_bytes(b"")
    assert native.available(tmp_path)
    assert native.envoy_env(tmp_path)[native.SEARCH_PATH_ENV] == str(tmp_path)


@pytest.mark.parametrize(("headers", "code", "words"), [
    ({"grpc-encoding": "snappy"}, 12, "grpc-encoding snappy is not supported"),
    ({"grpc-encoding": "sn\x01ppy"}, 12, "grpc-encoding sn?ppy"),  # quoted printable
    ({"x-junk-bin": "!!!"}, 3, "metadata x-junk-bin is not base64"),
    ({"grpc-tags-bin": "AAECA"}, 3, "grpc-tags-bin is not base64"),  # 5 mod 4 = 1: no bytes
    ({"x-pad-bin": "AA=="}, None, None),
    ({"x-pad-bin": "A==="}, 3, "x-pad-bin is not base64"),
    ({"x-pad-bin": "AAE"}, None, None),  # unpadded, as gRPC sends it
    ({"grpc-status": "0"}, 3, "grpc-status is a response's"),
    ({"grpc-message": "x"}, 3, "grpc-message is a response's"),
    ({"grpc-previous-rpc-attempts": "x"}, 3, "grpc-previous-rpc-attempts=x is not a count"),
    ({"grpc-previous-rpc-attempts": "-1"}, 3, "is not a count"),
    ({"grpc-previous-rpc-attempts": "2"}, None, None),
    ({"grpc-encoding": "gzip"}, None, None),
    ({"grpc-encoding": "identity"}, None, None),
    ({"content-type": "text/plain"}, 3, "content-type text/plain is not gRPC's"),
    ({"content-type": "application/grpc-web"}, 3, "application/grpc-web is not gRPC's"),
    ({"content-type": "application/grpc+proto"}, None, None),
    ({"te": "gzip"}, 3, "a call without te: trailers is not gRPC: send te: trailers"),
    ({"te": ["gzip", "trailers"]}, None, None),
])
def test_what_a_backend_would_reset_the_stream_for_is_refused_at_the_listener(
        host: FakeEnvoyHost, headers: dict[str, str | list[str]], code: int | None,
        words: str | None) -> None:
    """Metadata a backend's gRPC server resets the stream for (Envoy took the reset for the
    backend's failure: retried elsewhere, ejected by outlier detection): refused on the
    caller's headers, every RPC, with what was wrong (``sy_wire_refusal``)."""
    for path in (INFER, "/inference.GRPCInferenceService/ServerReady"):
        _listener(host).start({":path": path, **headers}, _request("m"))
        got = host.request_headers()
        reply = host.reply()
        if code is None:
            assert reply is None, (path, reply)
            continue
        assert got == STOP and reply is not None, path
        assert reply[0] == code and words is not None and words in reply[1], reply
