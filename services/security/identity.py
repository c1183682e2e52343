"""Who the peer is: the SANs (else the common name) of its verified client certificate.

gRPC fills ``context.auth_context()`` only after the TLS handshake verified the certificate
against the CA, so anything read here is authenticated. A plaintext peer has no identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

AuthContext = Mapping[str, Iterable[bytes]]

SAN_KEY = "x509_subject_alternative_name"
CN_KEY = "x509_common_name"


def identities(auth: AuthContext | None) -> tuple[str, ...]:
    """Every name the peer's certificate proves, SANs first; () for a plaintext peer."""
    if not auth:
        return ()
    names = [v.decode("utf-8", "replace") for v in auth.get(SAN_KEY, ())]
    if not names:
        names = [v.decode("utf-8", "replace") for v in auth.get(CN_KEY, ())]
    return tuple(names)


def peer_identities(context: object) -> tuple[str, ...]:
    """Identities of a ``grpc.aio.ServicerContext``'s peer."""
    try:
        auth = context.auth_context()  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return ()
    return identities(auth)


def peer_address(context: object) -> str:
    try:
        return str(context.peer())  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return ""
