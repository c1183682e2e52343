"""Tenants from credentials, never from x-tenant; regions/clouds/cost narrowed; quotas."""

from __future__ import annotations

import pytest

from placement.errors import InvalidRequest, PermissionDenied
from placement.model import Hints
from services.grpc_errors import status_of
from services.security.errors import QuotaExceeded, Unauthenticated
from services.security.settings import LimitsSettings, SecuritySettings, TenantSettings
from services.security.tenants import TenantGate

REGIONS = {"r-east": "aws", "r-west": "aws", "r-central": "gcp"}
ACME = TenantSettings(name="acme", token="acme-secret", allowed_regions=["r-west"],
                      max_cost_usd=0.001, rate_limit_per_s=2, burst=2, max_concurrency=1)
GLOBEX = TenantSettings(name="globex", client_san="globex.tenant.local", allowed_clouds=["aws"])


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def gate(clock: Clock | None = None, **kw: object) -> TenantGate:
    sec = SecuritySettings(plaintext=True, tenants=[ACME, GLOBEX], **kw)  # type: ignore[arg-type]
    return TenantGate(sec, REGIONS, clock or Clock())


BEARER = ("authorization", "Bearer acme-secret")
HINTS = Hints(slo_ms=100.0)


def test_token_identifies_the_tenant_and_narrows_regions_and_cost() -> None:
    adm = gate().admit([BEARER])
    h = adm.narrow(Hints(slo_ms=100.0, max_cost_usd=0.5))
    assert (adm.tenant, h.tenant, h.allowed_regions, h.max_cost_usd) == \
        ("acme", "acme", {"r-west"}, 0.001)
    adm.release()


def test_header_regions_are_intersected_never_widened() -> None:
    adm = gate().admit([BEARER])
    wide = Hints(slo_ms=1.0, allowed_regions=frozenset({"r-west", "r-east"}))
    assert adm.narrow(wide).allowed_regions == {"r-west"}
    with pytest.raises(PermissionDenied, match="outside tenant 'acme'"):
        adm.narrow(Hints(slo_ms=1.0, allowed_regions=frozenset({"r-east"})))


def test_client_certificate_san_identifies_the_tenant_and_clouds_become_regions() -> None:
    auth = {"x509_subject_alternative_name": [b"globex.tenant.local"]}
    adm = gate().admit([], lambda: auth)
    assert adm.tenant == "globex" and adm.narrow(HINTS).allowed_regions == {"r-east", "r-west"}


def test_x_tenant_alone_is_not_a_credential() -> None:
    with pytest.raises(Unauthenticated, match="not a credential"):
        gate().admit([("x-tenant", "acme")])


def test_x_tenant_disagreeing_with_the_credential_is_denied() -> None:
    with pytest.raises(PermissionDenied, match="does not match"):
        gate().admit([BEARER, ("x-tenant", "globex")])
    assert gate().admit([BEARER, ("x-tenant", "acme")]).tenant == "acme"


@pytest.mark.parametrize("value", ["Bearer nope", "Basic YWNtZQ==", "Bearer ", "acme-secret"])
def test_bad_tokens_are_unauthenticated(value: str) -> None:
    with pytest.raises(Unauthenticated):
        gate().admit([("authorization", value)])


def test_anonymous_calls_pass_unless_tenants_are_required() -> None:
    assert gate().admit([("x-slo-ms", "5")]).narrow(HINTS) is HINTS
    with pytest.raises(Unauthenticated, match="tenants only"):
        gate(require_tenant=True).admit([])


def test_no_tenants_configured_keeps_the_x_tenant_label() -> None:
    off = TenantGate(SecuritySettings(plaintext=True), REGIONS)
    assert not off.enabled
    assert off.admit([("x-tenant", "t1")]).narrow(HINTS).tenant == "t1"


def test_rate_limit_is_a_token_bucket_with_retry_info() -> None:
    clock = Clock()
    g = gate(clock)
    for _ in range(2):  # burst 2
        g.admit([BEARER]).release()
    with pytest.raises(QuotaExceeded) as err:
        g.admit([BEARER])
    assert err.value.quota == "rate" and err.value.retry_after_s == pytest.approx(0.5)
    code, _, trailers = status_of(err.value)
    assert code.name == "RESOURCE_EXHAUSTED" and trailers == (("retry-after-ms", "500"),)
    clock.t += 0.5
    g.admit([BEARER]).release()


def test_concurrency_quota_and_release() -> None:
    clock = Clock()
    g = gate(clock)
    first = g.admit([BEARER])
    clock.t += 10
    with pytest.raises(QuotaExceeded) as err:
        g.admit([BEARER])
    assert err.value.quota == "concurrency" and err.value.retry_after_s
    first.release()
    first.release()  # idempotent: a slot is freed once
    g.admit([BEARER])
    with pytest.raises(QuotaExceeded):
        g.admit([BEARER])


def test_reload_swaps_policies_and_keeps_quota_state() -> None:
    clock = Clock()
    g = gate(clock)
    held = g.admit([BEARER])
    g.reload(SecuritySettings(plaintext=True, tenants=[
        ACME.model_copy(update={"allowed_regions": ["r-east"], "max_concurrency": 1}),
        GLOBEX]))
    clock.t += 10
    with pytest.raises(QuotaExceeded):
        g.admit([BEARER])  # the slot held before the reload still counts
    held.release()
    assert g.admit([BEARER]).narrow(HINTS).allowed_regions == {"r-east"}
    g.reload(SecuritySettings(plaintext=True, tenants=[GLOBEX]))
    with pytest.raises(Unauthenticated):
        g.admit([BEARER])


def test_metadata_count_limit() -> None:
    g = TenantGate(SecuritySettings(plaintext=True, limits=LimitsSettings(max_metadata_count=4)),
                   REGIONS)
    with pytest.raises(InvalidRequest, match="5 metadata entries"):
        g.admit([(f"x-k{i}", "v") for i in range(5)])
