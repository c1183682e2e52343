"""Free TCP ports for processes that take a port number as a flag (Triton, our own servers).

``bind(port 0)`` returns the kernel's pick from the *ephemeral* range, the same range outgoing
connections draw their local ports from, and nothing stops it from returning the same port to
two consecutive calls once the probing socket is closed. A mesh asks for a dozen ports before
anything binds, so both happened (Triton once got the same port for gRPC and metrics). Ports
are therefore drawn at random *below* the ephemeral range, probed with a bind, and not handed
out again by one process while they are among its last ``_RECENT`` picks (callers that build
configs in a loop and never bind, like the fuzz tests, would otherwise exhaust the range).
"""

from __future__ import annotations

import random
import socket
import threading
from collections import deque

_LOW = 20000
_RECENT = 2048
_issued: set[int] = set()
_order: deque[int] = deque()
_lock = threading.Lock()
_rng = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _remember(ports: list[int]) -> None:
    _issued.update(ports)
    _order.extend(ports)
    while len(_order) > _RECENT:
        _issued.discard(_order.popleft())


def free_ports(n: int, host: str = "127.0.0.1", *, consecutive: bool = False) -> list[int]:
    """``n`` distinct ports free on ``host`` right now, none among this process's recent picks.

    There is still a window between this call and the server's bind in which another process
    could take a port; drawing at random from ~12k ports outside the ephemeral range makes
    that unlikely, which is enough for tests and local meshes.
    """
    high = _ephemeral_low() - 1
    low = _LOW if high - _LOW > 1000 else 1024
    with _lock:
        for _ in range(2000):
            if consecutive:
                base = _rng.randint(low, high - n)
                picked = list(range(base, base + n))
            else:
                picked = _rng.sample(range(low, high), n)
            if any(p in _issued for p in picked):
                continue
            if all(_bindable(host, p) for p in picked):
                _remember(picked)
                return picked
    raise RuntimeError(f"no {n} free ports on {host} between {low} and {high}; "
                       "too many servers running? stop old meshes (switchyard status)")


def free_port(host: str = "127.0.0.1") -> int:
    """One port from :func:`free_ports`."""
    return free_ports(1, host)[0]
