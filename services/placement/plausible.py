"""Whether an agent's counters could be true: a report that no backend could have produced
is refused before ``FleetState.ingest`` learns from it.

Triton's statistics are cumulative; placement learns a deployment's rate, busy time, compute
and queue per call from the difference between two reports (``placement.fleet``). A
counter that goes backwards was read there as a restart (the totals used as they are), and
one that jumps was read as load: a wrapped or garbled counter, or a buggy agent, moved the
backend's estimates (compute, queue, spare capacity) and with them every edge's routing.
Now, per variant, against the backend's last used report over the window between them
(by the agent's clock when both carry it, else by arrival):

- **backwards** (calls, batches, queue or compute time): a restart is real when the
  process, or the model (Triton's explicit model control resets a model's statistics when it
  loads it again), could have counted every one of its new totals since the last report:
  each within the bounds below over that window. Otherwise it is no restart (the wire
  carries no process start time or boot id): refused;
- **calls** past ``MAX_CALLS_PER_SLOT_S`` (100,000 a second, a 10 µs call) times the
  backend's declared ``max_concurrency``: more than a GPU could serve;
- **compute time** past the window times ``max_concurrency`` times the window's mean
  batch (calls per execution; ``MAX_BATCH`` when the agent sends no executions) times
  ``BUSY_SLACK`` (10): an order of magnitude busier than its declared slots could be;
- **queue time** past ``MAX_QUEUE_S`` (10 min) a call.

A refused report is not used at all (nor its readiness or GPUs: the next report carries
them); it is logged (``telemetry_implausible``, once per backend and reason every 100),
counted (``switchyard_placement_telemetry_refused_total{reason}``) and named in the
stream's ``TelemetryAck.message``; the stream goes on. When the next report is plausible
against the refused one though not against the last used one, the counters moved once and go
on from there (a counter source that changed, a restart that looked like none): the refused
report becomes the base, and that report is used. One sample is lost, the estimates never
learn the jump.
"""

from __future__ import annotations

from dataclasses import dataclass

from placement.fleet import TelemetrySnapshot, VariantStats
from placement.model import Backend

MAX_CALLS_PER_SLOT_S = 100_000.0
MAX_BATCH = 64.0
# ``max_concurrency`` is what the edges may send, not Triton's model instances (direct
# clients and warm-up calls run beside them): the compute bound is an order of magnitude
# past it, to refuse garbled counters, not a busy hour.
BUSY_SLACK = 10.0
MAX_QUEUE_S = 600.0
MIN_WINDOW_S = 1.0
REASONS = ("counter_backwards", "calls_past_capacity", "compute_past_capacity",
           "queue_past_bound")


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # one of REASONS (a metric label)
    detail: str  # what was seen, for the log and the ack


def window_s(before: TelemetrySnapshot, before_at: float, snap: TelemetrySnapshot,
             now: float) -> float:
    """Seconds between two reports' counter reads (as ``placement.fleet`` measures them),
    at least ``MIN_WINDOW_S``: two reports read close together are judged as a second
    apart (their rate is not known that closely)."""
    if before.sent_ms and snap.sent_ms > before.sent_ms:
        dt = (snap.sent_ms - before.sent_ms) / 1000
    else:
        dt = now - before_at
    return max(dt, MIN_WINDOW_S)


def _bounds(backend: Backend, d_count: int, d_exec: int, dt: float, d_compute: int,
            d_queue: int) -> Refusal | None:
    slots = max(backend.max_concurrency, 1)
    cap = MAX_CALLS_PER_SLOT_S * slots * dt
    if d_count > cap:
        return Refusal("calls_past_capacity",
                       f"{d_count} calls in {dt:.3g} s, more than {slots} slots could serve "
                       f"({cap:.3g})")
    batch = d_count / d_exec if d_exec > 0 else MAX_BATCH
    busy = dt * 1e9 * slots * max(batch, 1.0) * BUSY_SLACK
    if d_compute > busy:
        return Refusal("compute_past_capacity",
                       f"{d_compute / 1e9:.3g} s of compute in {dt:.3g} s on {slots} slots "
                       f"(batch {batch:.3g})")
    if d_queue > max(d_count, 1) * MAX_QUEUE_S * 1e9:
        return Refusal("queue_past_bound",
                       f"{d_queue / 1e9:.3g} s queued by {d_count} calls")
    return None


def check_variant(backend: Backend, name: str, cur: VariantStats, before: VariantStats,
                  dt: float) -> Refusal | None:
    """Why ``cur`` cannot follow ``before`` after ``dt`` seconds; None when it can."""
    counters = ((cur.inference_count, before.inference_count),
                (cur.execution_count, before.execution_count),
                (cur.compute_infer_ns, before.compute_infer_ns),
                (cur.queue_ns, before.queue_ns))
    if any(c < b for c, b in counters):  # a restart counts again from zero
        fresh = _bounds(backend, cur.inference_count, cur.execution_count, dt,
                        cur.compute_infer_ns, cur.queue_ns)
        if fresh is None:
            return None
        return Refusal("counter_backwards",
                       f"{name}: counters went backwards (calls {before.inference_count} -> "
                       f"{cur.inference_count}) and are no restart: {fresh.detail} since "
                       "the last report")
    out = _bounds(backend, cur.inference_count - before.inference_count,
                  cur.execution_count - before.execution_count, dt,
                  cur.compute_infer_ns - before.compute_infer_ns, cur.queue_ns - before.queue_ns)
    if out is not None:
        return Refusal(out.reason, f"{name}: {out.detail}")
    return None


def check(backend: Backend, before: TelemetrySnapshot | None, before_at: float | None,
          snap: TelemetrySnapshot, now: float) -> Refusal | None:
    """Why ``snap`` cannot follow ``before`` (the backend's last used report); None when it
    can, or when there is nothing to compare (a first report: its totals are its whole
    life)."""
    if before is None or before_at is None:
        return None
    dt = window_s(before, before_at, snap, now)
    slots = max(backend.max_concurrency, 1)
    calls_cap, busy_cap = MAX_CALLS_PER_SLOT_S * slots * dt, dt * 1e9 * slots * BUSY_SLACK
    for name, cur in snap.variants.items():
        prev = before.variants.get(name)
        if prev is None:
            continue
        # every report of a healthy agent: nothing backwards, within the bounds at a batch
        # of one (the tightest), so no more is asked (~10,000 reports a second at scale)
        d_count = cur.inference_count - prev.inference_count
        d_compute = cur.compute_infer_ns - prev.compute_infer_ns
        d_queue = cur.queue_ns - prev.queue_ns
        if (0 <= d_count <= calls_cap and 0 <= d_compute <= busy_cap
                and 0 <= d_queue <= max(d_count, 1) * MAX_QUEUE_S * 1e9
                and cur.execution_count >= prev.execution_count):
            continue
        if (why := check_variant(backend, name, cur, prev, dt)) is not None:
            return why
    return None
