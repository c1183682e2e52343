"""A caller's client certificate as Envoy forwards it: the ``x-forwarded-client-cert`` header.

An Envoy edge ends the caller's TLS itself, so its slow path (the co-located Python edge,
``services.edge.envoy.slowpath``) sees Envoy's certificate, not the caller's. For tenants
identified by a client certificate (``[[security.tenants]] client_san``) Envoy's listener
sanitizes the header a caller sent and sets its own (``forward_client_cert_details:
SANITIZE_SET``, with the certificate's DNS and URI SANs: ``services/xds/listener.py``), and
the slow path reads the caller's identities from it instead of from its own TLS peer.

It believes the header only from a peer that proves, by its own verified certificate, to be
the edge's Envoy: the same identities as the edge certificate the slow path itself serves
with (Envoy and its slow path share the edge role's certificate files). From anyone else (a
mesh client dialling the slow path's private port directly) the header is ignored and the
peer's own certificate identifies it, exactly as on a Python edge. Envoy verified the
caller's certificate against the mesh CA before it set the header (a certificate that does
not chain fails the handshake), so the names in it are authenticated.

Format (Envoy's documentation, "x-forwarded-client-cert"): comma-separated elements, one per
proxy hop, each ``Key=Value`` pairs separated by ``;``; a value containing ``,`` ``;`` or
``=`` is double-quoted, with ``\\"`` for a quote. With ``SANITIZE_SET`` there is one element:
the caller's. ``DNS`` and ``URI`` may repeat, one per SAN.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509

from services.security.identity import SAN_KEY, identities
from services.security.tenants import AuthSource, Metadata

HEADER = "x-forwarded-client-cert"
SAN_KEYS = ("DNS", "URI")  # set_current_client_cert_details: these and the Subject


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double quotes."""
    parts, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def sans(value: str) -> tuple[str, ...]:
    """The identities in the last element of header ``value`` (the certificate of the peer
    the last proxy saw: with ``SANITIZE_SET``, the caller's) as ``identity.identities``
    gives a peer's: its DNS and URI SANs in the order given, else its subject's common name."""
    element = _split(value, ",")[-1]
    out, subject = [], ""
    for pair in _split(element, ";"):
        key, eq, raw = pair.strip().partition("=")
        if not eq:
            continue
        if key in SAN_KEYS and _unquote(raw.strip()):
            out.append(_unquote(raw.strip()))
        elif key == "Subject":
            subject = _unquote(raw.strip())
    if not out and subject:
        out = [rdn.strip()[3:] for rdn in _split(subject, ",")
               if rdn.strip().startswith("CN=")][:1]
    return tuple(out)


def certificate_identities(cert_file: str | pathlib.Path) -> tuple[str, ...]:
    """The SANs of the PEM certificate at ``cert_file`` as gRPC reports a peer's
    (``identity.identities``): DNS names, URIs and IP addresses as text."""
    cert = x509.load_pem_x509_certificate(pathlib.Path(cert_file).read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [*ext.get_values_for_type(x509.DNSName),
             *ext.get_values_for_type(x509.UniformResourceIdentifier),
             *(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))]
    return tuple(names)


@dataclass(frozen=True)
class ForwardedCerts:
    """The slow path's reading of a call's identity: ``envoy`` is the set of identities of
    the edge certificate (its Envoy's)."""

    envoy: frozenset[str]

    def view(self, metadata: Metadata, auth: AuthSource
             ) -> tuple[list[tuple[str, str | bytes]], AuthSource]:
        """(the call's metadata without the header, the auth context that identifies the
        caller): the header's SANs when the peer is the edge's Envoy, else the peer's own."""
        items = list(metadata or ())
        header = [v for k, v in items if k == HEADER]
        if not header:
            return items, auth
        rest = [(k, v) for k, v in items if k != HEADER]
        peer = set(identities(auth() if callable(auth) else auth))
        if not peer or peer != self.envoy:
            return rest, auth  # not from the edge's Envoy: ignored
        raw = header[-1]
        names = sans(raw.decode("latin-1") if isinstance(raw, bytes) else raw)
        forwarded: Mapping[str, list[bytes]] = {SAN_KEY: [n.encode() for n in names]}
        return rest, forwarded
