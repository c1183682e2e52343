"""An operator's availability change (drain, cordon, restore) on every replica of a placement.

Replicas share no state: each rebuilds from registrations and telemetry, which agents send
to every replica. An operator's ``SetAvailability`` reaches the one replica it is sent to
(``switchyard drain`` asks the first that answers, of the owning shard with shards), so
before this module an edge watching another replica kept routing to a drained backend.

The replica an operator's change reaches applies it and forwards it, the same request, to
its peers (the other replicas of its shard, or of the mesh: ``main.start_placement``'s
``peers``), marked with ``FORWARDED`` (its ``placement_id``) and ``AT`` (when the operator's
change was made, its wall clock in ns); a forwarded change is applied, never forwarded
again. ``SetAvailability`` answers once every peer applied it or its first attempt failed
(``first_try_s``), so a drain that returns has reached every replica that answers. A peer
that did not answer is tried again, in order, with backoff, until it does, for as long as
this replica runs. A peer that answers NOT_FOUND has no backend, region or cloud of that
name (an agent that registered with this replica only, a peer restarted before the agent
re-registered there): that is final for that one change, logged, and the peer's queue goes
on to the next change, so one such change never holds back later ones. Each replica applies
a change only when it is newer (``AT``) than the last it applied to the same scope and
target, so a late retry never undoes a later change.

Peers are addresses: behind one Service address (the Helm chart's shard Service, which a
pod lists as its shard's replica) a forward reaches the one pod the Service picks, maybe the
sender itself (applied again, harmless), not every pod; there, drain each pod, or list the
pods' own addresses as replicas.

A replica that starts later (or restarts) loads the state learned last among its own file
and its peers' (``peer.warm_start``), availability included: a drain made while it was down
is in it.

Under mTLS a forwarded change is authorised like any ``SetAvailability``: placement's own
certificate must be among ``[security] admin_identities``; a peer that refuses it
(PERMISSION_DENIED, UNAUTHENTICATED) is not asked again, and the refusal is logged once with
what to do. Without that, each replica must be drained on its own (as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import grpc
import structlog

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc

log = structlog.get_logger("switchyard.placement.replicate")

FORWARDED = "x-switchyard-forwarded-by"  # metadata: the forwarding replica's placement_id
AT = "x-switchyard-availability-at"  # metadata: when the operator's change was made (ns)
_FINAL = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED})

ChannelFactory = Callable[..., grpc.aio.Channel]
Key = tuple[int, str]  # (scope, target)


class Stamps:
    """When the change each replica applied last to each (scope, target) was made."""

    def __init__(self) -> None:
        self._at: dict[Key, int] = {}

    def newer(self, request: placement_pb2.SetAvailabilityRequest, at_ns: int) -> bool:
        """Record ``at_ns`` for the request's scope and target if newer than the last."""
        key = (request.scope, request.target)
        if at_ns < self._at.get(key, -1):
            return False
        self._at[key] = at_ns
        return True


class _Peer:
    def __init__(self, address: str) -> None:
        self.address = address
        self.queue: asyncio.Queue[tuple[placement_pb2.SetAvailabilityRequest, int,
                                        asyncio.Future[bool]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.refused = False


class AvailabilityFanout:
    """Forwards each operator change to ``peers`` in order (see the module)."""

    def __init__(self, peers: Sequence[str], channel: ChannelFactory, placement_id: str,
                 timeout_s: float = 2.0, first_try_s: float = 1.0,
                 backoff_s: tuple[float, float] = (0.2, 5.0)) -> None:
        self.peers = [_Peer(p) for p in peers]
        self.channel = channel
        self.placement_id = placement_id
        self.timeout_s = timeout_s
        self.first_try_s = first_try_s
        self.backoff_s = backoff_s
        self.pending = 0  # changes not yet applied by some peer

    async def forward(self, request: placement_pb2.SetAvailabilityRequest, at_ns: int
                      ) -> list[str]:
        """Queue ``request`` for every peer; wait for each one's first attempt (at most
        ``first_try_s``); the peers that have not applied it yet."""
        waits: list[tuple[str, asyncio.Future[bool]]] = []
        loop = asyncio.get_running_loop()
        for p in self.peers:
            if p.refused:
                continue
            done: asyncio.Future[bool] = loop.create_future()
            p.queue.put_nowait((request, at_ns, done))
            self.pending += 1
            if p.task is None or p.task.done():  # (a task that failed is started again)
                p.task = asyncio.create_task(self._run(p), name=f"availability-to-{p.address}")
            waits.append((p.address, done))
        if waits:
            await asyncio.wait([d for _, d in waits], timeout=self.first_try_s)
        return [a for a, d in waits if not (d.done() and d.result())]

    async def _run(self, p: _Peer) -> None:
        async with self.channel(p.address) as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            while True:
                request, at_ns, done = await p.queue.get()
                delay = self.backoff_s[0]
                while not p.refused:
                    code, details = await self._send(stub, request, at_ns)
                    if code is None:
                        break
                    if code is grpc.StatusCode.NOT_FOUND:  # final for this change only
                        log.warning("availability_forward_not_found", peer=p.address,
                                    scope=request.scope, target=request.target,
                                    details=details,
                                    action="that peer has nothing of that name to change; "
                                    "its later changes still go to it")
                        break
                    if not done.done():
                        done.set_result(False)
                    if code in _FINAL:
                        p.refused = True
                        log.error("availability_forward_refused", peer=p.address,
                                  code=code.name, details=details,
                                  action="this replica's operator changes no longer go to "
                                  "that peer: under mTLS list placement's identity in "
                                  "[security] admin_identities, or drain each replica")
                        break
                    log.warning("availability_forward_failed", peer=p.address, code=code.name,
                                retry_in_s=round(delay, 2), scope=request.scope,
                                target=request.target)
                    await asyncio.sleep(delay)
                    delay = min(self.backoff_s[1], delay * 2)
                self.pending -= 1
                if not done.done():
                    done.set_result(not p.refused)
                elif not p.refused:
                    log.info("availability_forwarded_late", peer=p.address,
                             scope=request.scope, target=request.target)

    async def _send(self, stub: placement_pb2_grpc.PlacementStub,
                    request: placement_pb2.SetAvailabilityRequest, at_ns: int
                    ) -> tuple[grpc.StatusCode | None, str]:
        """Forward once; (None, "") when the peer applied it, else its status and details."""
        try:
            await stub.SetAvailability(
                request, timeout=self.timeout_s,
                metadata=((FORWARDED, self.placement_id), (AT, str(at_ns))))
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return None, ""

    async def stop(self) -> None:
        tasks = [p.task for p in self.peers if p.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def now_ns() -> int:
    return time.time_ns()
