"""How the operator commands reach a mesh: its config, read once, and a stub of placement.

``placement_stub`` also records on ``args`` the address it asks, how a connection error names
it (``rpc_target``) and the ``[security]`` it dialled with (``security``), which
``services.cli.main`` uses in the message it prints. Placement always requires a client
certificate when ``[security] plaintext = false``: the CLI presents the ``admin`` role's
(:func:`services.security.transport.channel_credentials`, the credentials the mesh's own
channel factory uses), so ``drain`` and ``plan --approve`` pass ``admin_identities``.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl

import grpc

from services.config import MeshConfig, load_config
from services.security.settings import SecuritySettings

ADMIN_ROLE = "admin"  # the CLI's certificate role (`switchyard certs` writes admin.pem)


def load_mesh(args: argparse.Namespace) -> MeshConfig:
    """The config of ``--config``, with the environment's overrides."""
    return load_config(args.config, env=dict(os.environ))


def admin_channel(address: str, security: SecuritySettings | None) -> grpc.Channel:
    """A channel to placement at ``address`` as ``[security]`` says: plaintext, or TLS
    verified against ``ca_file`` presenting the admin certificate. ``None``: plaintext."""
    if security is None or security.plaintext:
        return grpc.insecure_channel(address)
    from services.security import transport

    return grpc.secure_channel(address, transport.channel_credentials(security, ADMIN_ROLE))


def serving(address: str, security: SecuritySettings | None, timeout_s: float = 1.0) -> bool:
    """Whether placement at ``address`` answers its gRPC health check SERVING, dialled as
    :func:`admin_channel` dials (so a TLS replica counts)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with admin_channel(address, security) as ch:
        try:
            # types-grpcio-health-checking's HealthStub declares no methods.
            check = health_pb2_grpc.HealthStub(ch).Check  # type: ignore[attr-defined]
            resp = check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def placement_stub(cfg: MeshConfig, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A ``Placement`` stub for ``--placement`` or, by default, ``[placement]``'s host:port,
    or with ``[placement] replicas`` the first of host:port and the replicas that answers (a
    drain sent to a standby reaches the others through its fan-out); none answering: the
    primary, and the error names every address tried."""
    from services.api.switchyard.v1 import placement_pb2_grpc

    primary = f"{cfg.placement.host}:{cfg.placement.port}"
    tried = list(dict.fromkeys([primary, *cfg.placement.replicas]))
    address = args.placement or primary
    args.rpc_target = f"placement at {address}"  # named in connection errors
    if not args.placement and len(tried) > 1:
        answering = next((a for a in tried if serving(a, cfg.security)), None)
        address = answering or primary
        args.rpc_target = (f"placement at {address}" if answering else
                           f"placement at {primary} or any of its [placement] replicas "
                           f"({', '.join(tried[1:])})")
    args.placement_address = address
    args.security = cfg.security
    return placement_pb2_grpc.PlacementStub(admin_channel(address, cfg.security))


def speaks_tls(address: str, timeout_s: float = 2.0) -> bool | None:
    """Whether a server at ``address`` answers a TLS handshake (its certificate is not
    checked: this only tells a TLS port from a plaintext one); None when nothing answers."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a probe of the protocol: nothing is sent over it
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw, \
                ctx.wrap_socket(raw):
            return True
    except ssl.SSLError as exc:  # a plaintext HTTP/2 server answers no TLS record
        return exc.reason not in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                  "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
    except (OSError, ValueError):
        return None


def transport_mismatch(address: str, security: SecuritySettings | None) -> str:
    """Why the CLI's handshake with placement at ``address`` failed, when it did: the config
    dials plaintext and the port speaks TLS, or the other way round, or the certificates do
    not match ("" when the port does not answer: nothing to say beyond "unreachable")."""
    tls = speaks_tls(address)
    if tls is None:
        return ""
    plaintext = security is None or security.plaintext
    if plaintext and tls:
        return (f"placement at {address} requires TLS: pass --config with [security] "
                "(plaintext = false, ca_file, and cert_file/key_file with an admin "
                "certificate, e.g. from `switchyard certs`)")
    if not plaintext and not tls:
        return (f"placement at {address} serves plaintext, but the config's [security] has "
                "plaintext = false: pass the --config that placement runs with")
    if not plaintext and tls:
        return (f"placement at {address} refused the TLS handshake: check that [security] "
                "ca_file is the CA placement's certificate chains to and that cert_file/"
                f"key_file name the {ADMIN_ROLE} certificate it signed")
    return ""
