"""What ``switchyard`` says when a gRPC call fails: who could not be reached (placement or
an edge, at which address) and what to do, or the server's own refusal with its message and
the next step (never "is the mesh running?" for a bad argument)."""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable

import grpc


class Unreachable(Exception):
    """A process the command needs (an edge, a placement replica) does not answer, or cannot
    do what was asked: exit code 3, as when a gRPC call cannot reach it or is refused.
    ``message`` names it (its address) and says what to do next."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# What to do next, by the status placement answered with.
NEXT_STEP = {
    "NOT_FOUND": "`switchyard status` lists the backends, regions and models (one route "
                 "table each) placement knows",
    "INVALID_ARGUMENT": "fix the value named above (see `switchyard <command> --help`)",
    "FAILED_PRECONDITION": "the request cannot succeed in the mesh's current state; see "
                           "`switchyard status`",
    "PERMISSION_DENIED": "this needs an admin identity: use a certificate named in "
                         "[security] admin_identities",
    "UNAUTHENTICATED": "this placement requires mTLS: configure [security] with a client "
                       "certificate",
}
_UNREACHABLE = ("failed to connect", "connection refused", "dns resolution failed",
                "name resolution", "socket closed", "connection reset", "unreachable",
                "errors resolving", "lookup failed")


def rpc_error_message(exc: grpc.RpcError, where: str = "placement",
                      elsewhere: str = "point at a running replica with --placement "
                                       "host:port", start: str = "switchyard up",
                      handshake: Callable[[], str] | None = None) -> str:
    """What went wrong, for people: ``where`` (e.g. "placement at 127.0.0.1:50050")
    unreachable (``start``: the command that starts that mesh), or its own refusal with its
    message and what to do next. ``handshake``: asked when the connection failed (not a
    deadline), says why when it was the TLS handshake (the port speaks TLS and the config
    dials plaintext, ...), else ""."""
    if not isinstance(exc, grpc.Call):  # every RpcError a stub raises is also a Call
        return f"switchyard: {exc!r}"
    code, details = exc.code(), exc.details() or ""
    # UNAVAILABLE from the channel (nothing listens) or our own deadline (nothing answers);
    # any other status is placement's answer.
    unreachable = code is grpc.StatusCode.DEADLINE_EXCEEDED or (
        code is grpc.StatusCode.UNAVAILABLE
        and (not details or any(s in details.lower() for s in _UNREACHABLE)))
    why = (handshake() if handshake is not None and unreachable
           and code is grpc.StatusCode.UNAVAILABLE else "")
    if why:
        return f"switchyard: {why} ({code.name}: {details})"
    if unreachable:
        return (f"switchyard: cannot reach {where} ({code.name}: {details}).\n"
                f"  next: is the mesh running? Start it with `{start}`, or {elsewhere}")
    step = NEXT_STEP.get(code.name, "see the placement log for details")
    return f"switchyard: {where} answered {code.name}: {details}\n  next: {step}"




def address(text: str) -> str:
    """An argparse type: ``host:port`` (or several, comma-separated), port 1-65535; "" (the
    default: from the config) as is."""
    if not text:
        return text
    for one in text.split(","):
        host, _, port = one.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(
                f"{one!r} is not host:port with a port from 1 to 65535 (e.g. 127.0.0.1:50050)")
    return text


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n


def prompt_tokens(text: str) -> int:
    """An argparse type: a prompt's length in tokens, 1 to 2^32 - 1 (it was sent as is:
    ``--prompt-tokens -5`` was protobuf's ValueError traceback)."""
    n = positive(text)
    if n >= 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is over 4294967295 tokens")
    return n


def more_than_zero(text: str) -> float:
    """An argparse type: a finite number above 0 (a duration, a rate)."""
    try:
        x = float(text)
    except ValueError:
        x = 0.0
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return x


# `switchyard certs`: the names of the files it writes for itself in --dir (the CA, each role).
CERT_FILES_OF_ITS_OWN = ("ca", "placement", "edge", "agent", "admin")
_CERT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_SAN = re.compile(r"[A-Za-z0-9*_]([A-Za-z0-9*_.-]{0,251}[A-Za-z0-9_])?")


def san(text: str) -> str:
    """An argparse type: a certificate SAN: an IP address, a URI (``scheme://…``) or a DNS
    name (letters, digits, ``-``, ``.``, ``_``, ``*``)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return text
    if "://" in text and text.isascii() and text.isprintable() and " " not in text:
        return text
    if not _DNS_SAN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address, a URI or a DNS name (e.g. acme.tenant.local)")
    return text


def client_spec(text: str) -> str:
    """An argparse type: ``NAME=SAN[,SAN…]`` for ``switchyard certs --client``: NAME becomes
    ``NAME.pem`` / ``NAME.key`` in --dir, so a plain file name that is not one of the files
    certs writes for itself (the CA's, a role's), and at least one SAN."""
    name, eq, sans = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=SAN[,SAN…] "
                                         "(e.g. tenant-acme=acme.tenant.local)")
    if not _CERT_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"NAME {name!r} in {text!r} is not a file name (letters, digits, '.', '_', '-', "
            "not starting with '.'; at most 64): it becomes NAME.pem and NAME.key in --dir")
    if name in CERT_FILES_OF_ITS_OWN:
        raise argparse.ArgumentTypeError(
            f"NAME {name!r} in {text!r} is the {'CA' if name == 'ca' else 'role'}'s own "
            f"certificate ({name}.pem): pick another name, e.g. tenant-{name}")
    listed = [s.strip() for s in sans.split(",") if s.strip()]
    if not listed:
        raise argparse.ArgumentTypeError(f"{text!r} names no SAN after '=' "
                                         "(e.g. tenant-acme=acme.tenant.local)")
    for one in listed:
        san(one)
    return text
