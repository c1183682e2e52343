"""Triton's own view of a backend: readiness, per-model statistics and in-flight requests.

Reads ``ModelStatistics`` over gRPC with ``tritonclient.grpc.aio`` (cumulative counts and
nanoseconds since the server started: inference/execution counts, success/fail, queue and
compute time) into ``telemetry_pb2.ModelStats``, and, when the backend has a metrics port,
``nv_inference_pending_request_count`` from Triton's Prometheus endpoint for ``inflight``.

Triton being down is a normal state for a mesh, not an error: :meth:`TritonStatsReader.read`
returns a snapshot with ``ready=False`` and the reason, and never lets a tritonclient or
grpc exception out.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from services.api.switchyard.v1 import telemetry_pb2

log = structlog.get_logger("switchyard.agent.triton")


@dataclass
class TritonSnapshot:
    """What one read of a backend found; ``error`` says why it is not ready."""

    ready: bool
    models: list[telemetry_pb2.ModelStats] = field(default_factory=list)
    inflight: int = 0
    error: str = ""


class StatsSource(Protocol):
    """Anything that can report a backend's Triton state (the reader, or a test fake)."""

    async def read(self) -> TritonSnapshot: ...

    async def close(self) -> None: ...


class TritonStatsReader:
    """Polls one Triton server for the given variants. One gRPC channel, kept open."""

    def __init__(self, endpoint: str, variants: Sequence[str], *,
                 metrics_url: str | None = None, timeout_s: float = 1.0) -> None:
        self.endpoint = endpoint
        self.variants = list(variants)
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self._client: Any = None

    async def read(self) -> TritonSnapshot:
        """Readiness, one ``ModelStats`` per configured variant, and ``inflight``."""
        try:
            client = self._connect()
            ready = bool(await client.is_server_ready(client_timeout=self.timeout_s))
            if not ready:
                return TritonSnapshot(ready=False, error="server not ready")
            stats = await client.get_inference_statistics(as_json=False,
                                                          client_timeout=self.timeout_s)
            ready_flags = await asyncio.gather(*(
                client.is_model_ready(v, client_timeout=self.timeout_s) for v in self.variants))
        except (InferenceServerException, grpc.RpcError, OSError) as exc:
            log.debug("triton.unreachable", endpoint=self.endpoint, error=str(exc))
            return TritonSnapshot(ready=False, error=f"triton {self.endpoint}: {exc}")
        models = model_stats(stats, dict(zip(self.variants, ready_flags, strict=True)))
        inflight = await self._inflight() if self.metrics_url else 0
        return TritonSnapshot(ready=True, models=models, inflight=inflight)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _connect(self) -> Any:
        if self._client is None:
            self._client = triton_aio.InferenceServerClient(self.endpoint)
        return self._client

    async def _inflight(self) -> int:
        assert self.metrics_url is not None
        try:
            text = await asyncio.to_thread(_http_get, self.metrics_url, self.timeout_s)
        except (OSError, urllib.error.URLError) as exc:
            log.debug("triton.metrics_unreachable", url=self.metrics_url, error=str(exc))
            return 0
        return pending_requests(text, self.variants)


def model_stats(response: Any, ready: dict[str, bool]) -> list[telemetry_pb2.ModelStats]:
    """Convert Triton's ``ModelStatisticsResponse`` into one ``ModelStats`` per variant.

    Versions of one model are summed; a configured variant Triton does not report is
    included with zero counts and its readiness, so placement sees it exists but is idle.
    """
    out: dict[str, telemetry_pb2.ModelStats] = {
        v: telemetry_pb2.ModelStats(variant=v, ready=r) for v, r in ready.items()}
    for s in response.model_stats:
        m = out.get(s.name)
        if m is None:
            continue
        st = s.inference_stats
        m.inference_count += s.inference_count
        m.execution_count += s.execution_count
        m.success_count += st.success.count
        m.failure_count += st.fail.count
        m.queue_ns += st.queue.ns
        m.compute_infer_ns += st.compute_infer.ns
        m.compute_input_ns += st.compute_input.ns
        m.compute_output_ns += st.compute_output.ns
    return list(out.values())


def pending_requests(metrics_text: str, variants: Sequence[str]) -> int:
    """Sum ``nv_inference_pending_request_count`` over the given variants."""
    wanted = set(variants)
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "nv_inference_pending_request_count":
            continue
        for sample in family.samples:
            if sample.labels.get("model") in wanted:
                total += sample.value
    return int(total)


def _http_get(url: str, timeout_s: float) -> str:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"metrics url {url!r} is not http(s)")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked
        return str(resp.read().decode())
