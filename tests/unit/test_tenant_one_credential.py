"""One credential per call (services/security/tenants.py): a repeated ``authorization``, one
joined with ',' (as Envoy forwards a repeated one to its slow path) and one sent as
``authorization-bin`` are UNAUTHENTICATED, never read as one of the credentials or as none.
Each fails on the old gate: the last token won (served as that tenant), or the -bin one was
skipped (served as no tenant, outside the tenant's residency)."""

from __future__ import annotations

import grpc
import pytest

from services.grpc_errors import status_of
from services.security.errors import Unauthenticated
from services.security.settings import SecuritySettings, TenantSettings
from services.security.tenants import BINARY_CREDENTIAL, TWO_CREDENTIALS, TenantGate

REGIONS = {"r-east": "aws", "r-west": "aws", "r-central": "gcp"}
WEST = TenantSettings(name="west", token="west-secret", allowed_regions=["r-west"])
OPEN = TenantSettings(name="open", token="open-secret")


def gate(**kw: object) -> TenantGate:
    sec = SecuritySettings(plaintext=True, tenants=[WEST, OPEN], **kw)  # type: ignore[arg-type]
    return TenantGate(sec, REGIONS)


@pytest.mark.parametrize("metadata", [
    [("authorization", "Bearer west-secret"), ("authorization", "Bearer open-secret")],
    [("authorization", "Bearer open-secret"), ("authorization", "Bearer west-secret")],
    [("authorization", "Bearer west-secret"), ("authorization", "Bearer west-secret")],
    [("authorization", "Bearer west-secret,Bearer open-secret")],
    [("authorization", "Bearer west-secret,Bearer west-secret")],
])
def test_more_than_one_credential_is_unauthenticated(
        metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated) as err:
        gate().admit(metadata)
    assert str(err.value) == TWO_CREDENTIALS
    assert status_of(err.value)[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("metadata", [
    [("authorization-bin", b"Bearer west-secret")],
    [("authorization", "Bearer west-secret"), ("authorization-bin", b"Bearer open-secret")],
])
def test_a_credential_sent_as_binary_is_unauthenticated(
        metadata: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(Unauthenticated, match="authorization-bin is not read"):
        gate().admit(metadata)
    assert BINARY_CREDENTIAL.startswith("a credential sent as authorization-bin")


def test_one_credential_is_still_read_and_tenants_off_read_none() -> None:
    adm = gate().admit([("authorization", "Bearer west-secret")])
    assert adm.tenant == "west"
    adm.release()
    off = TenantGate(SecuritySettings(plaintext=True), REGIONS)
    assert off.admit([("authorization", "a,b"), ("authorization-bin", b"x")]).tenant == ""
