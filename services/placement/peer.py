"""Warm restart from a peer: a starting replica fetches what another replica has learned.

A replica's own file (:mod:`services.placement.persist`) only helps a replica restarted on
the same port in the same run dir. A replica started on another port or machine asks its
peers (``Placement.GetLearnedState``) for the same versioned state, as zlib-compressed JSON
of :func:`persist.dump`, and restores whichever state was learned last: its own file or a
peer's (:func:`persist.learned_unix`). Agents stream every report to every replica, so a
peer's last counters are the ones the next report continues from.

Failure paths, each one log line that says what happens next:

- a peer that does not answer within ``timeout_s`` (down, wrong address):
  ``peer_state_unavailable``; the replica uses its file, or starts cold;
- a peer whose state is of a format this placement does not read (a newer or older
  release): ``peer_state_refused``, naming both formats; never restored half-understood;
- no state anywhere: ``learned_state_none``, starting cold.

Wall clocks: ages are re-based on the peer's ``written_unix``, so the replicas' clocks are
assumed to agree to well under a telemetry interval (NTP).
"""

from __future__ import annotations

import asyncio
import json
import math
import pathlib
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from placement.errors import SwitchyardError
from placement.fleet import FleetState
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.placement import persist

log = structlog.get_logger("switchyard.placement.peer")

TIMEOUT_S = 1.5  # the target is a warm replica within 2 s of start
READS = (persist.FORMAT,)
OPTIONS = [("grpc.max_receive_message_length", -1)]  # 10k backends: several MB of state

ChannelFactory = Callable[..., grpc.aio.Channel]


class PeerUnavailable(SwitchyardError):
    """The peer did not answer (refused, timed out, failed)."""

    grpc_code = "UNAVAILABLE"


class StateRefused(SwitchyardError):
    """The peer answered with state this placement does not read; nothing is restored."""

    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, peer: str, fmt: int | None, why: str) -> None:
        super().__init__(f"learned state from {peer} refused: {why}")
        self.peer, self.format = peer, fmt


def encode(data: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 1)


def decode(raw: bytes) -> dict[str, Any]:
    data = json.loads(zlib.decompress(raw))
    if not isinstance(data, dict):
        raise TypeError(f"state is a JSON {type(data).__name__}, not an object")
    return data


async def answer(fleet: FleetState, now: float, placement_id: str) -> placement_pb2.LearnedState:
    """The server side: gathered on the loop (one consistent picture), encoded on a thread."""
    data = persist.dump(fleet, now, time.time())
    raw = await asyncio.to_thread(encode, data)
    return placement_pb2.LearnedState(format=persist.FORMAT, state=raw,
                                      placement_id=placement_id)


def accept(peer: str, resp: placement_pb2.LearnedState,
           reads: Sequence[int] = READS) -> dict[str, Any]:
    """The state in ``resp`` if this placement reads it; :class:`StateRefused` otherwise."""
    if resp.format not in reads:
        raise StateRefused(peer, resp.format,
                           f"format {resp.format} (from {resp.placement_id or 'a peer'}), "
                           f"this placement reads {list(reads)}")
    try:
        with persist.no_gc():
            data = decode(resp.state)
    except (zlib.error, ValueError, TypeError) as exc:
        raise StateRefused(peer, resp.format, f"state does not decode: {exc!r}") from exc
    if data.get("format") != resp.format:
        raise StateRefused(peer, resp.format, f"state says format {data.get('format')!r}, "
                                              f"the reply says {resp.format}")
    return data


async def fetch(peer: str, channel: ChannelFactory, placement_id: str,
                timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """One peer's learned state, checked by :func:`accept`."""
    async with channel(peer, options=OPTIONS) as ch:
        try:
            resp = await placement_pb2_grpc.PlacementStub(ch).GetLearnedState(
                placement_pb2.LearnedStateRequest(formats=list(READS),
                                                  placement_id=placement_id),
                timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise PeerUnavailable(f"{peer}: {exc.code().name} {exc.details()}") from exc
    return accept(peer, resp)


@dataclass(frozen=True)
class WarmStart:
    source: str        # "peer", "file" or "cold"
    origin: str        # the peer's address or the file's path; "" when cold
    backends: int      # backends restored
    learned_unix: float


async def warm_start(fleet: FleetState, path: pathlib.Path, peers: Sequence[str], now: float,
                     channel: ChannelFactory, placement_id: str,
                     timeout_s: float = TIMEOUT_S) -> WarmStart:
    """Restore into ``fleet`` the state learned last among ``path`` and ``peers`` (asked at
    once); before the first build. Every peer that fails is logged with what happens next."""
    t0 = time.monotonic()
    options: list[tuple[str, str, dict[str, Any]]] = []
    own = persist.read(path)
    if own is not None:
        options.append(("file", str(path), own))
    results = await asyncio.gather(*(fetch(p, channel, placement_id, timeout_s)
                                     for p in peers), return_exceptions=True)
    for p, r in zip(peers, results, strict=True):
        if isinstance(r, StateRefused):
            log.warning("peer_state_refused", peer=p, format=r.format, reads=list(READS),
                        error=r.message, action="not restored from this peer")
        elif isinstance(r, PeerUnavailable):
            log.warning("peer_state_unavailable", peer=p, error=r.message,
                        action="not restored from this peer")
        elif isinstance(r, BaseException):
            raise r
        else:
            options.append(("peer", p, r))
    # The state learned last; on a tie the file (no network in it), then the first peer. A
    # state whose times do not read (a corrupt file, a buggy peer) is skipped, not raised:
    # placement starts cold rather than not at all.
    ranked: list[tuple[float, bool, str, str, dict[str, Any]]] = []
    for source, origin, data in options:
        try:
            ranked.append((persist.learned_unix(data), source == "file", source, origin, data))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("learned_state_ignored", source=source, origin=origin,
                        error=repr(exc), action="trying the next source")
    ranked.sort(key=lambda o: (o[0], o[1]), reverse=True)
    for _, _, source, origin, data in ranked:
        try:
            n = persist.restore(fleet, data, now, time.time())
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("learned_state_ignored", source=source, origin=origin,
                        error=repr(exc), action="trying the next source")
            continue
        learned = persist.learned_unix(data)
        log.info("learned_state_loaded", source=source, origin=origin, backends=n,
                 took_s=round(time.monotonic() - t0, 3),
                 learned_s_ago=(round(time.time() - learned, 1) if math.isfinite(learned)
                                else None))
        return WarmStart(source, origin, n, learned)
    log.warning("learned_state_none", file=str(path), peers=list(peers),
                action="starting cold: estimates come back with the next reports")
    return WarmStart("cold", "", 0, -math.inf)


def configured_peers(configured: Sequence[str], host: str, port: int) -> list[str]:
    """The other replicas of ``configured`` (placement.host:port + placement.replicas) when
    this replica is one of them; none otherwise (a replica on an unlisted port is given its
    peers explicitly, so a test or a second mesh never borrows a stranger's state)."""
    me = {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", f"0.0.0.0:{port}"}
    if not me & set(configured):
        return []
    return [a for a in configured if a not in me]
