"""TLS for every Switchyard connection, and the HTTP/2 limits every server applies.

Servers call :func:`bind` (secure or, when the config says ``plaintext = true``, insecure
with a loud warning) and take :func:`server_options`; clients dial with :func:`channel` or
hand :func:`channel_factory` to a component that opens its own channels (the node agent).
Placement always requires a client certificate; the edge does when
``security.edge_client_certs`` is true (clients may otherwise authenticate with a token).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog

from placement.errors import ConfigError, MessageTooLarge
from services.security.settings import LimitsSettings, SecuritySettings

log = structlog.get_logger("switchyard.security")

Options = Sequence[tuple[str, Any]]

# Keepalive, one source for both ends. Clients (the edge's placement link, the agent) ping an
# idle connection every KEEPALIVE_TIME_MS, with or without a call in flight; every server must
# accept pings that often, or it counts each as a strike and, past two, closes the connection
# with GOAWAY "too_many_pings" (gRPC's server defaults allow one ping per 5 minutes with calls
# and none within 2 hours without). The server's floor is half the client's interval, so
# timer jitter never counts as a strike.
KEEPALIVE_TIME_MS = 5_000
KEEPALIVE_TIMEOUT_MS = 2_000
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2
CLIENT_KEEPALIVE: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
)
SERVER_KEEPALIVE: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
)


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"security.{what} {path!r} cannot be read: {exc.strerror}; "
                          "create development certificates with `switchyard certs`") from exc


def server_credentials(sec: SecuritySettings, role: str,
                       require_client_auth: bool = True) -> grpc.ServerCredentials:
    """This process's certificate, and (mTLS) the CA that client certificates must chain to."""
    cert, key = sec.cert_for(role)
    return grpc.ssl_server_credentials(
        [(_read(key, "key_file"), _read(cert, "cert_file"))],
        root_certificates=_read(sec.ca_file, "ca_file"),
        require_client_auth=require_client_auth)


def channel_credentials(sec: SecuritySettings, role: str) -> grpc.ChannelCredentials:
    """Verify the server against the CA and present this role's certificate."""
    cert, key = sec.cert_for(role)
    return grpc.ssl_channel_credentials(root_certificates=_read(sec.ca_file, "ca_file"),
                                        private_key=_read(key, "key_file"),
                                        certificate_chain=_read(cert, "cert_file"))


# A server that checks request size itself, so its refusal carries trailers (the edge), lets
# gRPC receive up to this much more than its limit; past that, gRPC's own refusal (no
# trailers) still bounds memory.
RECEIVE_HEADROOM_BYTES = 1 << 20


def receive_limit(max_message_bytes: int) -> int:
    """``grpc.max_receive_message_length`` for a server that enforces ``max_message_bytes``
    itself with :func:`check_message_size`."""
    return max_message_bytes + RECEIVE_HEADROOM_BYTES


def check_message_size(size: int, max_message_bytes: int) -> None:
    """``MessageTooLarge`` (RESOURCE_EXHAUSTED, naming the limit) for an oversized request."""
    if size > max_message_bytes:
        raise MessageTooLarge(f"request of {size} bytes is larger than max_message_bytes "
                              f"({size} vs. {max_message_bytes})")


def server_options(limits: LimitsSettings, header_room: int = 0) -> list[tuple[str, Any]]:
    """HTTP/2 limits: header list size, streams per connection, idle and aged connections;
    and the keepalive pings clients send (``SERVER_KEEPALIVE``). ``header_room``: bytes the
    header list may hold beyond ``max_metadata_bytes`` (an Envoy edge's slow path: what its
    Envoy adds; the edge's tenant gate holds the rest to the limit itself)."""
    opts: list[tuple[str, Any]] = [
        *SERVER_KEEPALIVE,
        ("grpc.max_metadata_size", limits.max_metadata_bytes + header_room),
        ("grpc.absolute_max_metadata_size", limits.max_metadata_bytes + header_room),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.max_connection_idle_ms", int(limits.idle_connection_timeout_s * 1000)),
    ]
    if limits.max_connection_age_s:
        opts.append(("grpc.max_connection_age_ms", int(limits.max_connection_age_s * 1000)))
        opts.append(("grpc.max_connection_age_grace_ms", 5_000))
    return opts


def announce(sec: SecuritySettings, process: str) -> None:
    """Say loudly, at start, when a process runs without TLS."""
    if sec.plaintext:
        log.warning("PLAINTEXT_TRANSPORT", process=process,
                    message="security.plaintext = true: no TLS, no client certificates, no "
                            "authorisation. Local development only; run `switchyard certs` "
                            "and set plaintext = false for anything else.")


def bind(server: grpc.aio.Server, host: str, port: int, sec: SecuritySettings, role: str,
         require_client_auth: bool = True) -> int:
    """Listen with TLS (or plaintext when configured so); returns the bound port."""
    address = f"{host}:{port}"
    if sec.plaintext:
        announce(sec, role)
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(sec, role,
                                                                   require_client_auth))
    if bound == 0:
        raise OSError(f"cannot listen on {address}: is another process using it? "
                      "Pick another port in the config.")
    return bound


def channel(address: str, sec: SecuritySettings, role: str, options: Options = ()
            ) -> grpc.aio.Channel:
    if sec.plaintext:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, channel_credentials(sec, role),
                                   options=list(options))


def channel_factory(sec: SecuritySettings, role: str, options: Options = ()
                    ) -> Callable[..., grpc.aio.Channel]:
    """``(address, options=()) -> channel`` for components that dial on their own (the agent,
    the edge's placement link); credentials are read once, here."""
    base = list(options)
    if sec.plaintext:
        def insecure(address: str, options: Options = ()) -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(address, options=[*base, *options])
        return insecure
    creds = channel_credentials(sec, role)

    def secure(address: str, options: Options = ()) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(address, creds, options=[*base, *options])
    return secure
