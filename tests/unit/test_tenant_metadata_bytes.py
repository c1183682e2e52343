"""``max_metadata_bytes`` held by the edge's tenant gate (services/security/tenants.py) on the
caller's own header list, as Envoy's listener counts it (name + value + 32 per entry): an Envoy
edge's slow path takes what its Envoy adds on top (main.ENVOY_HEADERS, gRPC's limit raised by
main.ENVOY_HEADER_BYTES) and still refuses a direct caller's list over the limit, in the
listener's words, Envoy's names no room for it. Each fails on the gate before 97937df (no
byte rule: admitted, or the count's INVALID_ARGUMENT); the last on 97937df's (admitted)."""

from __future__ import annotations

import grpc
import pytest

from placement.errors import SwitchyardError
from services.grpc_errors import status_of
from services.security.settings import LimitsSettings, SecuritySettings
from services.security.tenants import ENTRY_OVERHEAD, TenantGate

LIMIT = 2048
ENVOY = {"x-request-id": 0, "x-forwarded-proto": 64}


def gate(uncounted: dict[str, int] | None = None) -> TenantGate:
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
    rid = ("x-request-id", "r" * 36)  # the listener counted its bytes: so does the gate
    rest = LIMIT - (len(rid[0]) + len(rid[1]) + ENTRY_OVERHEAD)
    gate(ENVOY).admit([pad(rest), rid, ("x-forwarded-proto", "http")])
    assert refusal(gate(), [pad(rest), rid, ("x-forwarded-proto", "http")])[0] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_a_direct_caller_gets_no_room_under_envoys_names() -> None:
    """review8: with every name Envoy adds left out of the bytes, a caller of the slow path
    itself could send ~4 KiB past max_metadata_bytes under them (gRPC's limit has that room
    for Envoy). Past what Envoy writes there, they are the caller's bytes; x-request-id, which
    the listener counts, is counted whole."""
    rid = ("x-request-id", "r" * 700)
    assert refusal(gate(ENVOY), [pad(LIMIT - 100), rid])[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    proto = ("x-forwarded-proto", "p" * 700)  # 64 bytes of an entry allowed, the rest counted
    assert refusal(gate(ENVOY), [pad(LIMIT - 100), proto]) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"metadata of {LIMIT - 100 + len(proto[0]) + 700 + ENTRY_OVERHEAD - 64} bytes is larger "
        f"than max_metadata_bytes ({LIMIT - 100 + len(proto[0]) + 700 + ENTRY_OVERHEAD - 64} "
        f"vs. {LIMIT})")
