"""Simulated Triton backends: ``c`` servers with one FIFO queue, and Triton-style counters.

A pool of ``gpus`` GPUs running ``max_concurrency_per_gpu`` model instances each is one
backend with ``c = gpus × max_concurrency_per_gpu`` servers shared by every variant it hosts.
A call's service time is ``compute_ms / speed × exp(σ z − σ²/2)``. The queue holds at most
``max_queue_per_server × c`` calls (Triton's ``max_queue_size``); beyond that a call is
rejected at once (RESOURCE_EXHAUSTED).

Counters follow Triton's statistics extension: cumulative per variant, counted when a call
completes (``inference_count``, ``execution_count`` — no batching here, so equal —,
``queue_ns``, ``compute_infer_ns``). They are what the simulated agent reports, so
placement derives compute, queue and load exactly as it does from a real agent. A backend
that goes down fails everything queued or in service; when it comes back its counters start
from zero, like a restarted Triton.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from benchmarks.costsim.scenario import Pool
from placement.fleet import TelemetrySnapshot, VariantStats


@dataclass(slots=True)
class Job:
    call: int
    variant: str
    service_s: float
    submitted: float
    attempt_start: float
    started: float = 0.0
    epoch: int = 0


@dataclass(slots=True)
class Counters:
    inference_count: int = 0
    queue_ns: int = 0
    compute_infer_ns: int = 0


@dataclass(slots=True)
class SimBackend:
    pool: Pool
    max_queue: int
    up: bool = True
    busy: int = 0
    epoch: int = 0
    queue: deque[Job] = field(default_factory=deque)
    running: dict[int, Job] = field(default_factory=dict)  # call id -> job in service
    counters: dict[str, Counters] = field(default_factory=dict)

    @property
    def servers(self) -> int:
        return self.pool.servers

    def admit(self, job: Job, now: float) -> str:
        """``"start"`` (caller schedules completion), ``"queued"``, ``"rejected"`` or ``"down"``."""
        if not self.up:
            return "down"
        job.epoch = self.epoch
        if self.busy < self.pool.servers:
            self._start(job, now)
            return "start"
        if len(self.queue) >= self.max_queue:
            return "rejected"
        self.queue.append(job)
        return "queued"

    def _start(self, job: Job, now: float) -> None:
        self.busy += 1
        job.started = now
        self.running[job.call] = job

    def complete(self, job: Job, now: float) -> Job | None:
        """Finish ``job``; returns the next job started from the queue (caller schedules it)."""
        self.busy -= 1
        del self.running[job.call]
        c = self.counters.setdefault(job.variant, Counters())
        c.inference_count += 1
        c.queue_ns += int((job.started - job.submitted) * 1e9)
        c.compute_infer_ns += int(job.service_s * 1e9)
        if self.queue:
            nxt = self.queue.popleft()
            self._start(nxt, now)
            return nxt
        return None

    def go_down(self) -> list[Job]:
        """Outage: every queued and running job fails; returns them."""
        failed = list(self.running.values()) + list(self.queue)
        self.up, self.busy = False, 0
        self.epoch += 1
        self.queue.clear()
        self.running.clear()
        return failed

    def come_up(self, warmup: dict[str, tuple[int, float]]) -> None:
        """Back after an outage: a restarted Triton, counters from zero, then warm-up calls."""
        self.up = True
        self.counters.clear()
        self.warm(warmup)

    def warm(self, warmup: dict[str, tuple[int, float]]) -> None:
        """Record warm-up calls (variant -> (count, mean service seconds)) in the counters."""
        for variant, (count, mean_s) in warmup.items():
            if count > 0:
                c = self.counters.setdefault(variant, Counters())
                c.inference_count += count
                c.compute_infer_ns += int(count * mean_s * 1e9)

    def snapshot(self) -> TelemetrySnapshot:
        if not self.up:
            return TelemetrySnapshot(ready=False, simulated=True)
        return TelemetrySnapshot(
            ready=True, simulated=True,
            variants={v: VariantStats(c.inference_count, c.inference_count, 0, c.queue_ns,
                                      c.compute_infer_ns) for v, c in self.counters.items()},
            inflight=self.busy + len(self.queue))
