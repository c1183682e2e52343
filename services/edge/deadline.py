"""The caller's deadline as the slow path behind an Envoy edge counts it.

gRPC hands a handler the time left of the call's ``grpc-timeout`` counted from when its
headers reached this process. Behind Envoy that is later than the caller's own start: Envoy
reads the caller's headers, runs its filters, then forwards the same ``grpc-timeout`` to the
slow path. On a loaded host (load 30) the gap passed ``router.DEADLINE_SLACK_S``: the
caller's deadline ran out first, Envoy reset the upstream stream, and the slow path counted
a cancel (CANCELLED) where its caller saw DEADLINE_EXCEEDED (tests/integration/
test_hostile_round5.py). So Envoy's slow-path route (``services/xds/routes.py``) adds when
Envoy's stream began (``START_HEADER``, its START_TIME, epoch seconds) and the caller's
``grpc-timeout`` as Envoy read it (``TIMEOUT_HEADER``; gRPC keeps the forwarded one from the
handler), and the deadline counts from there. Either header missing or malformed: gRPC's
own time left. They can only bring the deadline closer, never push it past gRPC's.

``cancel_heard``: whether a call whose requests ended before any message was its caller's
cancel (gRPC says both alike, then cancels the handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable
from typing import Any

import grpc

START_HEADER = "x-switchyard-envoy-start"
TIMEOUT_HEADER = "x-switchyard-envoy-timeout"
# grpc-timeout's units (gRPC over HTTP/2: 1 to 8 ASCII digits, then one of these)
_UNIT_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout_s(value: str) -> float | None:
    """A ``grpc-timeout`` value in seconds (``100m``: 0.1), None when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isascii() and digits.isdigit()) or \
            unit not in _UNIT_S:
        return None
    return int(digits) * _UNIT_S[unit]


def _start_s(value: str) -> float | None:
    try:
        start = float(value)
    except ValueError:
        return None
    return start if math.isfinite(start) else None


def time_remaining(metadata: Iterable[tuple[str, str | bytes]] | None,
                   remaining_s: float | None, now_s: float) -> float | None:
    """The seconds left of the call's deadline at wall-clock time ``now_s``: gRPC's
    ``remaining_s`` (None: no deadline), or less when Envoy's headers say its stream began
    earlier."""
    start = timeout = None
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == START_HEADER:
            start = _start_s(value)
        elif key == TIMEOUT_HEADER:
            timeout = grpc_timeout_s(value)
    if remaining_s is None or start is None or timeout is None:
        return remaining_s
    return min(remaining_s, start + timeout - now_s)


# How long a call whose requests ended with no message waits for gRPC to cancel it: gRPC
# ends the requests of a call its caller cancelled as it does a half-close, then cancels the
# handler (counted OK or INVALID_ARGUMENT while its caller saw CANCELLED: test_hostile_round6).
CANCEL_HEARD_S = 0.1


async def cancel_heard(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Returns when the call is done or after ``CANCEL_HEARD_S``; the handler's cancel (its
    caller's) raises here."""
    done = asyncio.Event()
    # grpc-stubs type the callback as a class of theirs; any callable of the context works
    context.add_done_callback(lambda _: done.set())  # type: ignore[arg-type]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), CANCEL_HEARD_S)
