"""A steady, bounded tritonclient load against the edges, recording every call.

Calls are sent open-loop at ``rate`` per second (a ticker hands them to a fixed pool of
threads, so a slow answer does not slow the arrival rate) until ``stop()`` or until
``max_calls`` were sent. Every call is an ordinary ``tritonclient.grpc``
request with a gRPC deadline; the edge's trailers (``x-served-by``, ``x-attempts``,
``x-cost-usd``) say where it was served and how many attempts it took.

What the mesh did and what this client could do are kept apart: a call's deadline and its
latency run from when it left the client (``Call.started``), not from when the ticker
scheduled it. The time between its schedule and its start (``Call.lag_s``) is the client's:
a host too busy to run it on time (its threads share one GIL with the drill's own reads of
the mesh) starts calls late or drops ticks (``Load.skipped``), and a drill reports that as
the client's shortfall; it never eats into the time the mesh has for a call, nor counts as
a call the mesh lost. (A thread per call in flight instead of 16 was tried: with CPU-bound
threads in the drill's process, more threads slowed each call inside the client, 2 of 5
kill-backend drills failed on the reroute bound or never settled, 0 of 3 with 16.)

``client_failover`` makes the client try the next edge address when the call failed before
any edge routed it (UNAVAILABLE or CANCELLED with no Switchyard trailers: refused
connection, or cancelled by a server shutting down), as a regional load balancer in front
of several edges would; such calls are counted ("other edge"), never hidden.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.demo import infer_with_trailers

# A restarted edge is dialled again within 0.5 s (gRPC's default reconnect backoff starts at
# 1 s and grows to 120 s, which would measure the client, not the mesh). Not
# grpc.min_reconnect_backoff_ms: gRPC core also takes it as the least time a connection
# attempt gets, and at 100 ms a loaded host's edge could not be reached at all (see
# services/edge/upstream.py).
CLIENT_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 100),
                       ("grpc.max_reconnect_backoff_ms", 500)]
# Failed before any edge routed it (no Switchyard trailers): safe to send to another edge.
NOT_ROUTED = frozenset({"UNAVAILABLE", "CANCELLED"})


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What the load sends: where, what, how fast, with which deadline and SLO header."""

    edges: Sequence[str]                 # edge addresses; the first takes the load
    model: str = "summarize"
    input_dim: int = 16
    rate: float = 40.0                   # calls per second
    deadline_s: float = 2.0              # gRPC deadline of every call
    slo_ms: float | None = None          # x-slo-ms header; None: the deadline is the SLO
    concurrency: int = 16                # threads; 4x as many calls in flight at most
    max_calls: int = 100_000
    client_failover: bool = False


@dataclass(slots=True)
class Call:
    """One call as the client saw it; times are seconds since the drill's clock zero."""

    seq: int
    sent: float                          # when the ticker scheduled it
    done: float = 0.0
    status: str = "OK"
    served_by: str = ""                  # deployment id, "<backend>/<variant>"
    region: str = ""
    attempts: int = 0
    cost_usd: float = 0.0
    edge: str = ""
    client_failover: bool = False
    detail: str = ""
    started: float = -1.0                # when it left the client (its deadline runs from here)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def latency_ms(self) -> float:
        """From when the call left the client to its answer: the time the mesh had it."""
        return (self.done - self.left) * 1000

    @property
    def lag_s(self) -> float:
        """How late the client itself started the call after the ticker scheduled it (a busy
        host's thread scheduling): the client's, not the mesh's."""
        return max(0.0, self.left - self.sent)

    @property
    def left(self) -> float:
        """When the call left the client (its scheduled time if it never started)."""
        return self.started if self.started >= 0 else self.sent

    @property
    def backend(self) -> str:
        return self.served_by.split("/", 1)[0]


@dataclass
class Load:
    """Runs a :class:`LoadSpec` in background threads; ``calls`` grows as answers arrive."""

    spec: LoadSpec
    t0: float = field(default_factory=time.monotonic)
    calls: list[Call] = field(default_factory=list)
    skipped: list[float] = field(default_factory=list)  # ticks dropped: backlog was full

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clients = [tc.InferenceServerClient(a, channel_args=CLIENT_CHANNEL_ARGS)
                         for a in self.spec.edges]
        self._pool = ThreadPoolExecutor(self.spec.concurrency, thread_name_prefix="drill-load")
        self._ticker = threading.Thread(target=self._tick, name="drill-ticker", daemon=True)
        self._inflight = threading.Semaphore(self.spec.concurrency * 4)
        self.issued = 0  # calls handed to the pool; each one ends up in ``calls``
        self._seq = itertools.count()
        x = np.random.default_rng(1).standard_normal((1, self.spec.input_dim))
        self._data = x.astype(np.float32)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> Load:
        self._ticker.start()
        return self

    def stop(self) -> list[Call]:
        """Stop sending; wait for calls in flight (at most their deadline); return all calls."""
        self._stop.set()
        self._ticker.join()
        self._pool.shutdown(wait=True)
        for c in self._clients:
            c.close()
        with self._lock:
            return sorted(self.calls, key=lambda c: c.sent)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def _tick(self) -> None:
        period = 1.0 / self.spec.rate
        nxt = time.monotonic()
        for _ in range(self.spec.max_calls):
            if self._stop.is_set():
                return
            nxt += period
            # Bounded: at most 4x concurrency calls queued or in flight, never an
            # unbounded backlog when the mesh stops answering.
            if self._inflight.acquire(timeout=max(0.0, nxt - time.monotonic())):
                self._pool.submit(self._one, next(self._seq), self.now())
                self.issued += 1
            else:
                with self._lock:
                    self.skipped.append(self.now())
            delay = nxt - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return

    def _one(self, seq: int, sent: float) -> None:
        try:
            try:
                call = self._call(seq, sent)
            except Exception as exc:  # a client-side error is a failed call too
                call = Call(seq, sent, self.now(), type(exc).__name__, detail=str(exc)[:200])
                call.started = call.done
            with self._lock:
                self.calls.append(call)
        finally:
            self._inflight.release()

    def _call(self, seq: int, sent: float) -> Call:
        spec = self.spec
        x = tc.InferInput("INPUT0", [1, spec.input_dim], "FP32")
        x.set_data_from_numpy(self._data)
        md = [("x-request-id", f"drill-{seq}")]
        if spec.slo_ms is not None:
            md.append(("x-slo-ms", f"{spec.slo_ms:g}"))
        call = Call(seq, sent)
        call.started = self.now()  # a busy host can start a scheduled call late
        end = call.started + spec.deadline_s  # the mesh gets the whole deadline
        order = range(len(self._clients)) if spec.client_failover else range(1)
        for i in order:
            remaining = end - self.now()
            if remaining <= 0.001:
                break
            call.edge = spec.edges[i]
            try:
                _, tr = infer_with_trailers(self._clients[i], spec.model, [x], md, remaining)
            except (grpc.RpcError, InferenceServerException) as exc:
                status, details, tr = _error(exc)
                call.status, call.detail = status, details[:200]
                call.attempts = int(tr.get("x-attempts", "0"))
                call.served_by = tr.get("x-served-by", "")
                reached_edge = "x-attempts" in tr or "x-request-id" in tr
                if (spec.client_failover and call.status in NOT_ROUTED
                        and not reached_edge and i + 1 < len(self._clients)):
                    call.client_failover = True
                    continue
                break
            call.status, call.detail = "OK", ""
            call.served_by = tr.get("x-served-by", "")
            call.region = tr.get("x-served-region", "")
            call.attempts = int(tr.get("x-attempts", "1"))
            call.cost_usd = float(tr.get("x-cost-usd", "0") or 0)
            break
        call.done = self.now()
        return call


def _error(exc: BaseException) -> tuple[str, str, dict[str, str]]:
    """(status name, details, trailers) of a failed call.

    tritonclient's stub wraps gRPC errors in ``InferenceServerException``; the original
    ``grpc.RpcError`` (with the edge's trailers) is its ``__context__``.
    """
    err = exc if isinstance(exc, grpc.RpcError) else exc.__context__
    if isinstance(err, grpc.RpcError):
        call = cast("grpc.Call", err)  # a failed call's RpcError is also its grpc.Call
        # Only text trailers are read (x-attempts, x-served-by, ...); -bin ones are bytes.
        tr = {k: v for k, v in call.trailing_metadata() or () if isinstance(v, str)}
        return call.code().name, call.details() or "", tr
    assert isinstance(exc, InferenceServerException)
    status = str(exc.status() or "UNKNOWN").removeprefix("StatusCode.")
    return status, exc.message() or "", {}
