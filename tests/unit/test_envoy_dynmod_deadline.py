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
