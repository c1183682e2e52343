"""``max_metadata_bytes`` held by the edge's tenant gate (services/security/tenants.py) on the
caller's own header list, as Envoy's listener counts it (name + value + 32 per entry): an Envoy
edge's slow path takes what its Envoy adds on top (main.ENVOY_HEADERS, gRPC's limit raised by
main.ENVOY_HEADER_BYTES) and still refuses a direct caller's list over the limit, in the
listener's words. Each fails on the old gate (no byte rule: admitted, or the count's
INVALID_ARGUMENT)."""

from __future__ import annotations

import grpc
import pytest

from placement.errors import SwitchyardError
from services.grpc_errors import status_of
from services.security.settings import LimitsSettings, SecuritySettings
from services.security.tenants import ENTRY_OVERHEAD, TenantGate

LIMIT = 2048
ENVOY = frozenset({"x-request-id", "x-forwarded-proto"})


def gate(uncounted: frozenset[str] = frozenset()) -> TenantGate:
    sec = SecuritySettings(plaintext=True, limits=LimitsSettings(max_metadata_bytes=LIMIT))
    return TenantGate(sec, {"r-east": "aws"}, uncounted=uncounted)


def pad(size: int) -> tuple[str, str]:
    """One entry of exactly ``size`` bytes as HPACK counts it."""
    return ("x-pad", "p" * (size - len("x-pad") - ENTRY_OVERHEAD))


def refusal(g: TenantGate, md: list[tuple[str, str | bytes]]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(SwitchyardError) as err:
        g.admit(md)
    code, message, _ = status_of(err.value)
    return code, message


def test_a_list_one_byte_over_is_resource_exhausted_naming_its_size() -> None:
    ua = ("user-agent", "grpc-python/1.85")  # gRPC's own: not a custom entry, still bytes
    rest = LIMIT - (len(ua[0]) + len(ua[1]) + ENTRY_OVERHEAD)
    gate().admit([ua, pad(rest)])
    assert refusal(gate(), [ua, pad(rest + 1)]) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"metadata of {LIMIT + 1} bytes is larger than max_metadata_bytes "
        f"({LIMIT + 1} vs. {LIMIT})")


def test_a_binary_value_counts_as_its_base64() -> None:
    # 3 bytes are 4 base64 characters on the wire: 6 more than the 3 raw bytes would be.
    base = LIMIT - (len("x-b-bin") + 4 * 3 + ENTRY_OVERHEAD)
    gate().admit([pad(base), ("x-b-bin", b"\x00" * 9)])
    code, _ = refusal(gate(), [pad(base + 1), ("x-b-bin", b"\x00" * 9)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_bytes_are_checked_before_the_count_as_the_listener_does() -> None:
    md: list[tuple[str, str | bytes]] = [(f"x-h{i}", "v") for i in range(300)]
    assert refusal(gate(), md)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_what_envoy_adds_is_not_the_callers() -> None:
    envoy = [("x-request-id", "r" * 36), ("x-forwarded-proto", "http")]
    gate(ENVOY).admit([pad(LIMIT), *envoy])
    assert refusal(gate(), [pad(LIMIT), *envoy])[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
