"""TLS in the compiled config: an Envoy edge speaks ``[security]``'s transport.

The certificates are the node's own: its bootstrap (``services.edge.envoy.bootstrap``) holds
them as static secrets read from the same files a Python edge uses (``security.ca_file`` and
the ``edge`` role's ``cert_file``/``key_file``), and everything placement pushes names those
secrets only. No key travels over xDS, and a snapshot of the active config holds no key
either (Envoy's config dump redacts them; the snapshot keeps the bootstrap's file names).

- the listener (``downstream``): the edge certificate; with ``edge_client_certs`` a client
  must present a certificate that chains to the CA, as on a Python edge (a plaintext client,
  or one without such a certificate, fails the handshake: UNAVAILABLE to the caller);
- to a Switchyard server (``upstream``: placement for ADS and the access log, the co-located
  slow path): the edge certificate as the client certificate (both require one), and the
  server's certificate checked against the CA and (placement) the host dialled, as gRPC
  checks a target.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

# Registered in the default descriptor pool so ParseDict can resolve the "@type".
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as _tls_pb2  # noqa: F401

from services.xds.envoy_types import T

CA_SECRET = "switchyard-ca"  # noqa: S105 (the name of an SDS secret, not a secret)
EDGE_CERT_SECRET = "switchyard-edge-cert"  # noqa: S105 (a name, as above)
_ALPN = ["h2"]  # gRPC peers negotiate HTTP/2 by ALPN


def _socket(kind: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": T + f"envoy.extensions.transport_sockets.tls.v3.{kind}", **context}}


def downstream(require_client_cert: bool) -> dict[str, Any]:
    """The listener's transport socket: the edge's certificate; client certificates verified
    against the CA (required when ``require_client_cert``)."""
    return _socket("DownstreamTlsContext", {
        "require_client_certificate": require_client_cert,
        "common_tls_context": {
            "alpn_protocols": _ALPN,
            "tls_certificate_sds_secret_configs": [{"name": EDGE_CERT_SECRET}],
            "validation_context_sds_secret_config": {"name": CA_SECRET}}})


def _san(host: str) -> dict[str, Any]:
    try:
        ipaddress.ip_address(host)
        kind = "IP_ADDRESS"
    except ValueError:
        kind = "DNS"
    return {"san_type": kind, "matcher": {"exact": host}}


def upstream(hosts: Iterable[str] = ()) -> dict[str, Any]:
    """A cluster's transport socket to Switchyard servers at ``hosts``: mTLS with the edge's
    certificate; the server's must chain to the CA and name one of ``hosts`` (no hosts: the
    chain alone, for the node's own slow path on 127.0.0.1, which serves the edge's own
    certificate whatever names a fleet's PKI gave it)."""
    names = sorted(set(hosts))
    validation: dict[str, Any] = {  # Envoy requires the default context, even empty
        "default_validation_context": ({"match_typed_subject_alt_names": [_san(h) for h in names]}
                                       if names else {}),
        "validation_context_sds_secret_config": {"name": CA_SECRET}}
    context: dict[str, Any] = {"common_tls_context": {
        "alpn_protocols": _ALPN,
        "tls_certificate_sds_secret_configs": [{"name": EDGE_CERT_SECRET}],
        "combined_validation_context": validation}}
    dns = [h for h in names if _san(h)["san_type"] == "DNS"]
    if len(dns) == 1 and dns == names:
        context["sni"] = dns[0]
    return _socket("UpstreamTlsContext", context)


def static_secrets(ca_file: str, cert_file: str, key_file: str) -> list[dict[str, Any]]:
    """The bootstrap's secrets the pushed config names (files, read by Envoy itself)."""
    return [
        {"name": CA_SECRET, "validation_context": {"trusted_ca": {"filename": ca_file}}},
        {"name": EDGE_CERT_SECRET, "tls_certificate": {
            "certificate_chain": {"filename": cert_file},
            "private_key": {"filename": key_file}}},
    ]
