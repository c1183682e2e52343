"""One structured JSON event per call, kept off the call path.

The call path appends a small dict; a background task renders the batch with the C JSON
encoder and writes it in one ``write`` every ``flush_s``. Lines match the structlog JSON the
rest of the process writes (``event``, ``level``, ``timestamp``, ``logger``). Metrics use
labelled children cached per (model, deployment, status): a ``labels()`` lookup per call
costs more than the increment.

A call with an SLO (its hints were resolved: every routed call) is also counted once by
whether it met it: ``met="true"`` only when it was answered OK and ``x-slo-met`` said so, so
a failed call counts as missed. A call refused before routing has no SLO and is not counted.

A stream's tokens are counted from its token trailers (``x-tokens-in``, ``x-tokens-out``:
``StreamMeter.trailers``, what ``CallRecord.stream`` holds), under the same bounded model label,
so the counter's increase is the sum of the trailers the edge sent (or, for a stream its caller
cancelled, would have sent).

A deployment's call series leave with it: each new route table keeps only its deployments'
(``retain``), so the label stays bounded by the fleet the edge routes to now.

Every call is counted once, under a gRPC status name (anything else, such as an exception's
class name, becomes the status it means or ``UNKNOWN``). Label values are bounded: a model
name the route table does not know is counted as ``unknown`` (callers choose model names, so
they would otherwise choose the metric's cardinality), and every value is cut to
``MAX_LABEL`` characters of a safe charset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from prometheus_client import Counter, Histogram

from services.edge.router import CallRecord

MAX_BUFFER = 50_000  # records; past it the oldest unflushed lines are dropped and counted
UNKNOWN_MODEL = "unknown"  # the model label of calls naming a model the route table lacks
MAX_LABEL = 64  # characters per label value
STATUS_NAMES = frozenset(c.name for c in grpc.StatusCode)
# What a call's end looks like when it is not (yet) a status name: the status it means.
_STATUS_OF = {"CancelledError": "CANCELLED", "GeneratorExit": "CANCELLED",
              "TimeoutError": "DEADLINE_EXCEEDED"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/@-]")


def status_label(status: str) -> str:
    """A gRPC status name for ``status``: itself when it is one, else what it means."""
    if status in STATUS_NAMES:
        return status
    return _STATUS_OF.get(status, "UNKNOWN")


def label_value(value: str) -> str:
    """``value`` cut to ``MAX_LABEL`` characters, anything outside ``[A-Za-z0-9_.:/@-]``
    replaced by ``_``."""
    return _UNSAFE.sub("_", value[:MAX_LABEL])


def _cost(rec: CallRecord) -> float:
    """What the call cost as its ``x-cost-usd`` trailer tells the caller, 0 when it tells
    none (a failed call): a stream's, its tokens' (a stream ended at its cost cap included),
    not its row's per-call cost, which the log said before (a 4-token stream logged at
    $0.000125, its trailer $0.0000026); a served unary call's, its deployment's."""
    if rec.stream:
        return next((float(v) for k, v in rec.stream if k == "x-cost-usd"), 0.0)
    return rec.chosen.cost_usd if rec.chosen is not None and rec.status == "OK" else 0.0


class AccessLog:
    def __init__(self, calls: Counter, latency: Histogram, attempts: Counter,
                 enabled: bool = True, flush_s: float = 0.1, out: TextIO | None = None,
                 known_model: Callable[[str], bool] = lambda model: False,
                 slo_calls: Counter | None = None,
                 stream_tokens: Counter | None = None) -> None:
        """``known_model``: whether a model name is in the route table (else its calls are
        labelled ``unknown``). ``slo_calls``: labelled (model, met), ``stream_tokens``:
        labelled (model, direction), see the module doc."""
        self.calls, self.latency, self.attempts = calls, latency, attempts
        self.slo_calls, self.stream_tokens = slo_calls, stream_tokens
        self._tokens: dict[str, tuple[Any, Any]] = {}  # (in, out) children per model label
        self.known_model = known_model
        self.enabled = enabled
        self.flush_s = flush_s
        self.out = out
        self.buffer: list[dict[str, Any]] = []
        self.dropped = 0
        # (calls, latency, attempts, (SLO met, SLO missed)) children per (model, dep, status)
        self._children: dict[tuple[str, str, str],
                             tuple[Any, Any, Any, tuple[Any, Any] | None]] = {}

    def done(self, rec: CallRecord) -> None:
        """Called once per call by the router (hot path: dict lookups and an append)."""
        c = rec.chosen
        dep = c.deployment_id if c is not None else ""
        model = rec.model if self.known_model(rec.model) else UNKNOWN_MODEL
        key = (model, dep, rec.status)
        ch = self._children.get(key)
        if ch is None:
            m = label_value(model)
            slo = self.slo_calls
            ch = self._children[key] = (
                self.calls.labels(m, label_value(dep), status_label(rec.status)),
                self.latency.labels(m), self.attempts.labels(m),
                (slo.labels(m, "true"), slo.labels(m, "false")) if slo is not None else None)
        ch[0].inc()
        ch[1].observe(rec.latency_ms / 1000)
        ch[2].inc(rec.attempts)
        if rec.hints is not None and ch[3] is not None:
            ch[3][0 if rec.slo_met and rec.status == "OK" else 1].inc()
        if rec.stream and self.stream_tokens is not None:
            self._count_tokens(model, rec.stream)
        if not self.enabled:
            return
        if len(self.buffer) >= MAX_BUFFER:
            self.dropped += 1
            return
        self.buffer.append({
            "event": "call", "ts": time.time(), "request_id": rec.request_id,
            "model": rec.model, "deployment": dep, "region": c.region if c else "",
            "attempts": rec.attempts, "hedged": rec.hedged,
            "latency_ms": round(rec.latency_ms, 3), "cost_usd": _cost(rec),
            "slo_ms": rec.hints.slo_ms if rec.hints else None, "slo_met": rec.slo_met,
            "tenant": rec.hints.tenant if rec.hints else "",
            "status": status_label(rec.status)})

    def retain(self, deployments: Collection[str]) -> None:
        """A new route table holds ``deployments``: the call series of every other deployment
        leave the counter (as placement's cost gauge drops a deployment it no longer has).
        Kept forever, they grew without bound where the capacity loop adds GPUs: each managed
        instance is a new id (``<pool>-<serial>``), and so is each of its deployments."""
        gone = [key for key in self._children if key[1] and key[1] not in deployments]
        for model, dep, status in gone:
            del self._children[(model, dep, status)]
            with contextlib.suppress(KeyError):  # two ids cut to one label: removed once
                self.calls.remove(label_value(model), label_value(dep), status_label(status))

    def _count_tokens(self, model: str, trailers: tuple[tuple[str, str], ...]) -> None:
        """A stream's ``x-tokens-in`` / ``x-tokens-out`` into the counter (``model``: already
        the bounded label)."""
        ch = self._tokens.get(model)
        if ch is None:
            assert self.stream_tokens is not None
            m = label_value(model)
            ch = self._tokens[model] = (self.stream_tokens.labels(m, "in"),
                                        self.stream_tokens.labels(m, "out"))
        for key, value in trailers:
            if key == "x-tokens-in":
                ch[0].inc(int(value))
            elif key == "x-tokens-out":
                ch[1].inc(int(value))

    def flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        lines = []
        for r in batch:
            r["timestamp"] = datetime.fromtimestamp(r.pop("ts"), UTC).isoformat()
            r["level"] = "info"
            r["logger"] = "switchyard.edge.access"
            lines.append(json.dumps(r, separators=(",", ":")))
        if self.dropped:  # a line like every other: the same four fields
            lines.append(json.dumps({
                "event": "access_log_dropped", "level": "warning", "count": self.dropped,
                "timestamp": datetime.now(UTC).isoformat(), "logger": "switchyard.edge.access"
            }, separators=(",", ":")))
            self.dropped = 0
        out = self.out or sys.stderr
        out.write("\n".join(lines) + "\n")
        out.flush()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                self.flush()
        finally:
            self.flush()
