"""services/security/xfcc.py: a caller's certificate as an Envoy edge forwards it to its slow
path, believed only from that Envoy (real Envoy and TLS: tests/integration/
test_envoy_security.py)."""

from __future__ import annotations

import pathlib

import pytest

from services.security.certs import create_dev_pki
from services.security.identity import SAN_KEY, identities
from services.security.settings import SecuritySettings, TenantSettings
from services.security.tenants import TenantGate
from services.security.xfcc import HEADER, ForwardedCerts, certificate_identities, sans

ENVOY = frozenset({"edge.switchyard.local", "localhost", "127.0.0.1", "::1"})
FROM_ENVOY = {SAN_KEY: [n.encode() for n in sorted(ENVOY)]}


@pytest.mark.parametrize(("value", "names"), [
    ("Hash=ab12;DNS=beta.local", ("beta.local",)),
    ('Hash=ab;Subject="CN=x,O=y";URI=spiffe://t/beta;DNS=a.local;DNS=b.local',
     ("spiffe://t/beta", "a.local", "b.local")),
    ('Hash=ab;Subject="O=Org,CN=only-a-cn"', ("only-a-cn",)),  # no SANs: the common name
    ('Hash=ab;DNS="odd,name;x=y"', ("odd,name;x=y",)),  # quoted: , ; = inside a value
    ("Hash=1;DNS=first.local,Hash=2;DNS=second.local", ("second.local",)),  # the last hop
    ("Hash=ab", ()),
])
def test_the_header_gives_the_names_the_certificate_proves(
        value: str, names: tuple[str, ...]) -> None:
    assert sans(value) == names


def test_the_slow_path_believes_the_header_only_from_its_envoy() -> None:
    fwd = ForwardedCerts(ENVOY)
    md = [("x-slo-ms", "50"), (HEADER, "Hash=ab;DNS=beta.local")]
    rest, auth = fwd.view(md, lambda: FROM_ENVOY)
    assert rest == [("x-slo-ms", "50")]  # not counted as the caller's metadata
    assert not callable(auth) and identities(auth) == ("beta.local",)
    # a mesh client dialling the slow path directly with its own certificate: the header is
    # dropped and its own certificate identifies it
    caller = {SAN_KEY: [b"caller.switchyard.local"]}
    rest, auth = fwd.view(md, caller)
    assert rest == [("x-slo-ms", "50")] and auth is caller
    # a plaintext peer has no identity: nothing is believed
    rest, auth = fwd.view(md, {})
    assert rest == [("x-slo-ms", "50")] and identities(auth if not callable(auth) else None) == ()
    # no header: the call as it came
    assert fwd.view([("x-slo-ms", "50")], caller) == ([("x-slo-ms", "50")], caller)


def test_a_tenant_is_admitted_by_the_forwarded_certificate_and_only_that() -> None:
    sec = SecuritySettings(plaintext=True, require_tenant=True, tenants=[
        TenantSettings(name="beta", client_san="beta.local", allowed_regions=["r-west"])])
    gate = TenantGate(sec, {"r-west": "c", "r-east": "c"})
    fwd = ForwardedCerts(ENVOY)
    md, auth = fwd.view([(HEADER, "Hash=ab;DNS=beta.local")], FROM_ENVOY)
    admitted = gate.admit(md, auth)
    assert admitted.tenant == "beta"
    admitted.release()
    forged = fwd.view([(HEADER, "Hash=ab;DNS=beta.local")], {SAN_KEY: [b"caller.local"]})
    with pytest.raises(Exception, match="serves tenants only"):
        gate.admit(*forged)


def test_the_edge_certificates_identities_are_what_grpc_reports_of_it(
        tmp_path: pathlib.Path) -> None:
    issued = create_dev_pki(tmp_path / "certs")
    got = set(certificate_identities(issued["edge"].cert))
    assert got == set(issued["edge"].sans)
    assert "edge.switchyard.local" in got and "127.0.0.1" in got
