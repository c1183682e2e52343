"""mTLS with the development PKI: verified peers get identities by SAN, others never connect."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from cryptography import x509

from services.security import transport
from services.security.certs import create_dev_pki, main
from services.security.identity import identities, peer_identities
from services.security.settings import SecuritySettings

WHO = "/switchyard.test.Who/Who"


def sec_for(d: pathlib.Path) -> SecuritySettings:
    return SecuritySettings(plaintext=False, ca_file=str(d / "ca.pem"),
                            cert_file=str(d / "{role}.pem"), key_file=str(d / "{role}.key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("pki")
    create_dev_pki(d, clients={"tenant-acme": ["acme.tenant.local"]})
    return d


@pytest_asyncio.fixture
async def who_server(pki: pathlib.Path) -> AsyncIterator[int]:
    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return ",".join(peer_identities(context)).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "switchyard.test.Who", {"Who": grpc.unary_unary_rpc_method_handler(who)}),))
    port = transport.bind(server, "127.0.0.1", 0, sec_for(pki), "placement")
    await server.start()
    yield port
    await server.stop(0)


async def ask(channel: grpc.aio.Channel) -> str:
    async with channel:
        out = await channel.unary_unary(WHO)(b"", timeout=5)
    return out.decode()


def test_certificates_carry_role_sans_and_chain_to_the_ca(pki: pathlib.Path) -> None:
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    edge = x509.load_pem_x509_certificate((pki / "edge.pem").read_bytes())
    sans = edge.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge.switchyard.local" in sans.get_values_for_type(x509.DNSName)
    assert edge.issuer == ca.subject
    edge.verify_directly_issued_by(ca)
    assert (pki / "admin.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("role", ["admin", "agent", "edge"])
async def test_mtls_peer_identity_is_its_certificate_san(pki: pathlib.Path, who_server: int,
                                                         role: str) -> None:
    ch = transport.channel(f"localhost:{who_server}", sec_for(pki), role)
    assert f"{role}.switchyard.local" in (await ask(ch)).split(",")


async def test_extra_client_certificate_identity(pki: pathlib.Path, who_server: int) -> None:
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(),
                                         (pki / "tenant-acme.key").read_bytes(),
                                         (pki / "tenant-acme.pem").read_bytes())
    assert await ask(grpc.aio.secure_channel(f"127.0.0.1:{who_server}", creds)) == \
        "acme.tenant.local"


async def test_client_without_certificate_is_rejected(pki: pathlib.Path, who_server: int
                                                      ) -> None:
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ask(grpc.aio.secure_channel(f"localhost:{who_server}", creds))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_client_with_a_foreign_ca_certificate_is_rejected(
        pki: pathlib.Path, who_server: int, tmp_path: pathlib.Path) -> None:
    create_dev_pki(tmp_path)  # another CA entirely
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(),
                                         (tmp_path / "admin.key").read_bytes(),
                                         (tmp_path / "admin.pem").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ask(grpc.aio.secure_channel(f"localhost:{who_server}", creds))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_talk_to_a_tls_server(who_server: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ask(grpc.aio.insecure_channel(f"127.0.0.1:{who_server}"))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_identity_falls_back_to_common_name_and_plaintext_has_none() -> None:
    assert identities({"x509_common_name": [b"cn-only"]}) == ("cn-only",)
    assert identities({}) == ()
    assert identities(None) == ()


def test_certs_command_writes_the_layout(tmp_path: pathlib.Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path), "--host", "edge.example.com",
                 "--client", "tenant-b=b.tenant.local"]) == 0
    for name in ("ca", "placement", "edge", "agent", "admin", "tenant-b"):
        assert (tmp_path / f"{name}.pem").exists() and (tmp_path / f"{name}.key").exists()
    assert "plaintext = false" in capsys.readouterr().out
    ca_before = (tmp_path / "ca.pem").read_bytes()
    main(["--dir", str(tmp_path)])
    assert (tmp_path / "ca.pem").read_bytes() == ca_before  # the CA is reused
