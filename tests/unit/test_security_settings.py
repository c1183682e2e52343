"""The [security] section: explicit plaintext, complete TLS, references checked by path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from services.security import transport
from services.security.settings import (
    LOCAL_DEFAULT,
    SecuritySettings,
    TenantSettings,
    check_references,
    tenant_regions,
    token_digest,
)

REGIONS = {"r-east": "aws", "r-west": "aws", "r-central": "gcp"}


def test_plaintext_must_be_said_explicitly() -> None:
    with pytest.raises(ValidationError, match="set plaintext = true"):
        SecuritySettings()
    assert LOCAL_DEFAULT.plaintext and not LOCAL_DEFAULT.tls


def test_tls_needs_every_file() -> None:
    with pytest.raises(ValidationError, match=r"security\.key_file is empty"):
        SecuritySettings(plaintext=False, ca_file="ca.pem", cert_file="c.pem")
    s = SecuritySettings(ca_file="ca.pem", cert_file="certs/{role}.pem", key_file="k/{role}.key")
    assert s.tls and s.cert_for("edge") == ("certs/edge.pem", "k/edge.key")


def test_tenant_needs_a_credential_and_tokens_are_unique() -> None:
    with pytest.raises(ValidationError, match="needs a credential"):
        TenantSettings(name="a")
    with pytest.raises(ValidationError, match="defined twice"):
        SecuritySettings(plaintext=True, tenants=[TenantSettings(name="a", token="x"),
                                                  TenantSettings(name="b",
                                                                 token_sha256=token_digest("x"))])


def test_references_name_the_path() -> None:
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="a", token="t", allowed_regions=["mars"])])
    with pytest.raises(ValueError, match=r"security.tenants\[0\].allowed_regions 'mars'"):
        check_references(sec, REGIONS, [])
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="a", token="t", allowed_regions=["r-central"],
                       allowed_clouds=["aws"])])
    with pytest.raises(ValueError, match="leave no region"):
        check_references(sec, REGIONS, [])


def test_clouds_become_regions() -> None:
    t = TenantSettings(name="a", token="t", allowed_clouds=["aws"])
    assert tenant_regions(t, REGIONS) == {"r-east", "r-west"}


def test_plaintext_start_is_loud() -> None:
    with capture_logs() as logs:
        transport.announce(LOCAL_DEFAULT, "edge")
    assert logs and logs[0]["event"] == "PLAINTEXT_TRANSPORT" and logs[0]["log_level"] == "warning"


def test_limits_become_http2_options() -> None:
    opts = dict(transport.server_options(LOCAL_DEFAULT.limits))
    assert opts["grpc.max_metadata_size"] == 8192
    assert opts["grpc.max_concurrent_streams"] == 256
    assert opts["grpc.max_connection_idle_ms"] == 300_000
