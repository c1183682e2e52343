"""The C dynamic module (native/switchyard_edge.c) holds the listener Lua's deadline rule
(services/xds/lua.py): a ModelInfer or ModelStreamInfer whose caller has at most 2 ms of its
deadline left (``placement.attempts.MIN_REMAINING_S``; gRPC sends it in whole ms) is answered
DEADLINE_EXCEEDED and forwarded nowhere, the slow path included.
Against the FAKE Envoy host (tests/native/fake_envoy_host.c)."""

from __future__ import annotations

import pytest

from services.edge import wire
from services.xds import lua
from tests.native.envoy_host import FakeEnvoyHost, build

INFER, STREAM = lua.INFER_PATH, lua.STREAM_PATH
CONTINUE, STOP = 0, 1


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> FakeEnvoyHost:
    return FakeEnvoyHost(build(tmp_path_factory.mktemp("dm-deadline")))


def _request(name: str) -> bytes:
    message = wire.encode_name_field(name) + b"\x12\x02v1"
    return b"\x00" + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize("path", [INFER, STREAM])
@pytest.mark.parametrize("timeout", ["2m", "1m", "1500u", "900n"])
def test_at_most_two_ms_left_is_answered_deadline_exceeded_and_forwarded_nowhere(
        host: FakeEnvoyHost, path: str, timeout: str) -> None:
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": path, "grpc-timeout": timeout, "x-request-id": "r-1"},
               _request("m"))
    assert host.request_headers() == STOP
    reply = host.reply()
    assert reply is not None and reply[0] == 4, reply
    assert "not more than the 2 ms an attempt needs to start" in reply[1]
    assert host.header(lua.PATH_HEADER) is None  # not sent to the slow path either


@pytest.mark.parametrize(("path", "headers_say"), [(INFER, STOP), (STREAM, CONTINUE)])
def test_three_ms_left_is_forwarded(host: FakeEnvoyHost, path: str, headers_say: int) -> None:
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": path, "grpc-timeout": "3m"}, _request("m"))
    assert host.request_headers() == headers_say
    if path == INFER:
        host.request_body()
        assert host.header(lua.MODEL_HEADER) == "m"
    else:
        assert host.header(lua.PATH_HEADER) == "slow"
    assert host.reply() is None


@pytest.mark.parametrize("path", [INFER, STREAM, "/inference.GRPCInferenceService/ServerReady"])
@pytest.mark.parametrize("timeout", ["abc", "-1S", "1X", "", "5S5S", "S", "5", "5 S x",
                                     "1S,abc", "abc,1S"])
def test_an_unreadable_grpc_timeout_is_refused_in_grpcs_words(
        host: FakeEnvoyHost, path: str, timeout: str) -> None:
    """gRPC's core refuses it INTERNAL (the Python edge's caller sees this; Triton's too);
    before, the module served it with no deadline (``deadline_ms``: none or unreadable
    alike) and the route removed the header: the caller's deadline dropped."""
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": path, "grpc-timeout": timeout}, _request("m"))
    assert host.request_headers() == STOP
    assert host.reply() == (13, lua.TIMEOUT_UNREADABLE)
    assert host.header(lua.PATH_HEADER) is None


@pytest.mark.parametrize(("timeout", "slo"), [
    (" 5S ", "4995"),  # spaces around, as gRPC's ParseTimeout allows
    ("100500u", "96"),  # u and n rounded up to whole ms, as gRPC does (101 ms)
    ("1000000000m", "999999995"),  # 10 digits, at gRPC's limit
    ("1000000001m", None),  # over it: no deadline, not a fault
    ("12345678901X", None),  # gRPC stops reading at the 11th digit: no deadline
    ("1S,50S", "49995"),  # a repeat, joined by Envoy's codec: gRPC's core keeps the last
    ("50S,1S", "995"),
])
def test_a_grpc_timeout_is_read_as_grpcs_core_reads_it(
        host: FakeEnvoyHost, timeout: str, slo: str | None) -> None:
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": INFER, "grpc-timeout": timeout}, _request("m"))
    assert host.request_headers() == STOP and host.reply() is None
    assert host.header(lua.SLO_HEADER) == slo


@pytest.mark.parametrize(("timeout", "left"), [
    ("5S", "5S"),  # what Envoy's router reads already: left as sent
    ("1S,50S", "50000m"),  # a repeat: the router reads no joined value, so none was enforced
    ("200000000n", "200m"),  # 9 digits: the router reads at most 8 (gRPC's core reads it)
    (" 5S ", "5000m"),
    ("1000000001m", None),  # no deadline to gRPC's core: none sent on
])
def test_the_grpc_timeout_left_for_envoys_router_is_the_one_grpc_read(
        host: FakeEnvoyHost, timeout: str, left: str | None) -> None:
    """Envoy's router enforces the caller's deadline from its own reading of grpc-timeout (at
    most 8 digits, one value): a joined repeat or a 9-digit value it cannot read went
    unenforced on the fast path while the listener read it (review9). The listener now
    leaves the value it read, in the router's form."""
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": INFER, "grpc-timeout": timeout}, _request("m"))
    assert host.request_headers() == STOP and host.reply() is None
    assert host.header("grpc-timeout") == left
