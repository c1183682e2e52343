"""The slow path behind an Envoy edge counts the caller's deadline from Envoy's start
(``services.edge.deadline``), told by the slow-path route placement pushes."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2

from services.edge import deadline
from services.xds.envoy_types import EnvoySettings
from services.xds.routes import route_configuration


@pytest.mark.parametrize(("value", "seconds"), [
    ("100m", 0.1), ("2S", 2.0), ("1M", 60.0), ("1H", 3600.0), ("250000u", 0.25),
    ("99999999n", 0.099999999)])
def test_grpc_timeout_values(value: str, seconds: float) -> None:
    assert deadline.grpc_timeout_s(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "-", "m", "100", "100x", "123456789m", "-5m", "1.5S",
                                   "１00m", " 100m"])
def test_malformed_grpc_timeouts_are_none(value: str) -> None:
    assert deadline.grpc_timeout_s(value) is None


def envoys(start: str, timeout: str) -> tuple[tuple[str, str], ...]:
    return ((deadline.START_HEADER, start), (deadline.TIMEOUT_HEADER, timeout))


def test_the_deadline_counts_from_envoys_start() -> None:
    # Envoy began 0.3 s ago with a 1 s grpc-timeout; the slow path's gRPC counted from later
    now = 1_000.0
    assert deadline.time_remaining(envoys("999.700000", "1S"), 0.95, now) == pytest.approx(0.7)


def test_envoys_headers_never_push_the_deadline_past_grpcs() -> None:
    now = 1_000.0
    assert deadline.time_remaining(envoys("1000.000000", "5S"), 0.9, now) == 0.9
    assert deadline.time_remaining(envoys("inf", "5S"), 0.9, now) == 0.9
    # no deadline at all stays none: the headers never make one up
    assert deadline.time_remaining(envoys("999.0", "1S"), None, now) is None


@pytest.mark.parametrize("metadata", [
    (), ((deadline.START_HEADER, "999.0"),), ((deadline.TIMEOUT_HEADER, "1S"),),
    envoys("soon", "1S"), envoys("999.0", "-"), envoys("nan", "1S"),
    ((deadline.START_HEADER + "-bin", b"999.0"), (deadline.TIMEOUT_HEADER, "1S"))])
def test_without_both_headers_grpcs_time_left(metadata: tuple[tuple[str, str | bytes], ...]
                                              ) -> None:
    assert deadline.time_remaining(metadata, 0.9, 1_000.0) == 0.9


def test_the_slow_path_route_tells_envoys_start_and_the_callers_timeout() -> None:
    config = route_configuration("r-east", {}, EnvoySettings())
    slow = next(r for r in config.virtual_hosts[0].routes if r.name == "slow-path")
    told = {h.header.key: (h.header.value, h.append_action) for h in slow.request_headers_to_add}
    # a caller's own is replaced
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert told == {deadline.START_HEADER: ("%START_TIME(%s.%6f)%", overwrite),
                    deadline.TIMEOUT_HEADER: ("%REQ(grpc-timeout)%", overwrite)}
    assert "grpc-timeout" not in slow.request_headers_to_remove
