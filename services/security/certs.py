"""A local development CA and certificates: ``switchyard certs --dir certs``.

Writes ``ca.pem`` (+ ``ca.key``) and, per role, ``{role}.pem`` / ``{role}.key`` for
``placement``, ``edge``, ``agent`` and ``admin`` (the CLI), each with both server and client
usages, so one file serves a process that listens and dials. Identities are the SANs:
``<role>.switchyard.local`` (servers also get ``localhost``, ``127.0.0.1`` and ``::1``).
``--client NAME=SAN[,SAN…]`` issues extra certificates (a tenant's, a second agent's).

For development only: keys are unencrypted EC P-256, written with mode 0600. Production
certificates come from the fleet's own PKI (cert-manager, SPIFFE), in the same layout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DOMAIN = "switchyard.local"
SERVER_ROLES = ("placement", "edge")
CLIENT_ROLES = ("agent", "admin")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    name: str
    cert: pathlib.Path
    key: pathlib.Path
    sans: tuple[str, ...]


def default_sans(role: str, hosts: Sequence[str] = ()) -> tuple[str, ...]:
    base = (f"{role}.{DOMAIN}",)
    return (*base, *LOOPBACK, *hosts) if role in SERVER_ROLES else base


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        pass
    if "://" in san:
        return x509.UniformResourceIdentifier(san)
    return x509.DNSName(san)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: pathlib.Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(directory: pathlib.Path, days: int = 365
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA, written to ``ca.pem`` / ``ca.key``."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Switchyard"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Switchyard development CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _pem_key(key), private=True)
    return cert, key


def load_ca(directory: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{directory / 'ca.key'} is not an EC key written by switchyard certs")
    return cert, key


def issue(directory: pathlib.Path, name: str, sans: Sequence[str],
          ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], days: int = 90) -> Issued:
    """A leaf certificate ``<name>.pem`` / ``<name>.key`` signed by ``ca``, usable both ways."""
    if not sans:
        raise ValueError(f"certificate {name!r} needs at least one SAN")
    ca_cert, ca_key = ca
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Switchyard"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _pem_key(key), private=True)
    return Issued(name, cert_path, key_path, tuple(sans))


def create_dev_pki(directory: pathlib.Path, hosts: Sequence[str] = (),
                   clients: dict[str, Sequence[str]] | None = None,
                   reuse_ca: bool = True) -> dict[str, Issued]:
    """CA (reused when present) plus one certificate per role and per extra client."""
    directory.mkdir(parents=True, exist_ok=True)
    if reuse_ca and (directory / "ca.pem").exists() and (directory / "ca.key").exists():
        ca = load_ca(directory)
    else:
        ca = create_ca(directory)
    out = {role: issue(directory, role, default_sans(role, hosts), ca)
           for role in (*SERVER_ROLES, *CLIENT_ROLES)}
    for name, sans in (clients or {}).items():
        out[name] = issue(directory, name, sans, ca)
    return out


# -- `switchyard certs` ----------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    p = sub.add_parser("certs", help="create a development CA and certificates")
    p.add_argument("--dir", default="certs", help="output directory (default: certs)")
    p.add_argument("--host", action="append", default=[],
                   help="extra SAN for the placement and edge certificates (repeatable)")
    p.add_argument("--client", action="append", default=[], metavar="NAME=SAN[,SAN]",
                   help="an extra client certificate, e.g. tenant-acme=acme.tenant.local")
    p.add_argument("--new-ca", action="store_true", help="replace an existing CA")
    p.set_defaults(fn=cmd_certs)
    return p


def cmd_certs(args: argparse.Namespace) -> int:
    clients: dict[str, Sequence[str]] = {}
    for spec in args.client:
        name, _, sans = spec.partition("=")
        if not name or not sans:
            raise SystemExit(f"--client {spec!r}: expected NAME=SAN[,SAN…]")
        clients[name] = [s.strip() for s in sans.split(",") if s.strip()]
    directory = pathlib.Path(args.dir)
    issued = create_dev_pki(directory, args.host, clients, reuse_ca=not args.new_ca)
    print(f"development CA: {directory / 'ca.pem'}  (NOT for production)")
    for i in issued.values():
        print(f"  {i.name:<10} {i.cert}  SANs: {', '.join(i.sans)}")
    print("\nin the mesh file:\n  [security]\n  plaintext = false\n"
          f"  ca_file = \"{directory / 'ca.pem'}\"\n  cert_file = \"{directory}/{{role}}.pem\"\n"
          f"  key_file = \"{directory}/{{role}}.key\"\n"
          f"  admin_identities = [\"admin.{DOMAIN}\"]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["certs", *(argv or [])])
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
