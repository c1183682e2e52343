"""``switchyard certs`` as an operator mistypes it: a bad ``--client`` or ``--host`` is
refused by argparse (exit code 2, its usage line) before any file is written, never a
traceback, never a file outside ``--dir`` or over the CA's or a role's own certificate; a CA
in ``--dir`` that does not load or is not a CA is said (exit code 2, ``--new-ca``) instead
of a traceback or certificates signed by a leaf. In-process through ``cli.main``."""

from __future__ import annotations

import pathlib

import pytest
from cryptography import x509

from services import cli
from services.security.certs import create_dev_pki


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` configures process-wide logging onto the (captured) stderr: not in tests."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


def files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--client", "tenant-acme", "is not NAME=SAN[,SAN…]"),   # was exit code 1, no usage
    ("--client", "tenant-acme=,", "names no SAN after '='"),   # was a ValueError traceback
    ("--client", "ca=x.tenant.local", "is the CA's own certificate"),  # wrote a leaf on ca.pem
    ("--client", "admin=x.tenant.local", "is the role's own certificate"),  # replaced admin's
    ("--client", "../escaped=x.tenant.local", "is not a file name"),  # wrote outside --dir
    ("--client", "tenant-acme=acme tenant", "is not an IP address, a URI or a DNS name"),
    ("--host", "edge host", "is not an IP address, a URI or a DNS name"),
])
def test_a_bad_client_or_host_is_refused_before_anything_is_written(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], flag: str, value: str,
        said: str) -> None:
    certs = tmp_path / "d" / "certs"
    create_dev_pki(certs)
    before = files(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["certs", "--dir", str(certs), flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"switchyard certs: error: argument {flag}: " in err and said in err
    assert files(tmp_path) == before  # nothing written, in --dir or beside it


def test_a_good_client_is_issued_by_the_ca_it_reuses(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_dev_pki(tmp_path)
    ca = (tmp_path / "ca.pem").read_bytes()
    code = cli.main(["certs", "--dir", str(tmp_path), "--client",
                     "tenant-acme=acme.tenant.local,10.0.0.7", "--host", "edge.example.com"])
    assert code == 0 and (tmp_path / "ca.pem").read_bytes() == ca
    cert = x509.load_pem_x509_certificate((tmp_path / "tenant-acme.pem").read_bytes())
    assert cert.issuer == x509.load_pem_x509_certificate(ca).subject
    assert "tenant-acme" in capsys.readouterr().out


def test_a_ca_that_does_not_load_is_said_not_a_traceback(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    (tmp_path / "ca.key").write_text("not a key\n")
    code = cli.main(["certs", "--dir", str(tmp_path)])  # was ValueError's traceback
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ca.pem'} and {tmp_path / 'ca.key'} are not a CA written by " \
           "switchyard certs" in err and "pass --new-ca" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_a_leaf_over_the_ca_is_said_and_new_ca_replaces_it(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_dev_pki(tmp_path)
    for suffix in ("pem", "key"):  # what `--client ca=…` did: a leaf written as the CA
        (tmp_path / f"ca.{suffix}").write_bytes((tmp_path / f"admin.{suffix}").read_bytes())
    admin = (tmp_path / "admin.pem").read_bytes()
    code = cli.main(["certs", "--dir", str(tmp_path)])  # was exit 0: certificates signed by
    assert code == 2                                    # a leaf, which no peer verifies
    assert "ca.pem is not a CA certificate (a leaf: CN=admin.switchyard.local" in \
        capsys.readouterr().err
    assert (tmp_path / "admin.pem").read_bytes() == admin  # nothing issued
    assert cli.main(["certs", "--dir", str(tmp_path), "--new-ca"]) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
