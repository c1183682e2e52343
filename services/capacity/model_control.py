"""Load, drain and unload variants on one Triton server through its repository API.

Triton must run in explicit model-control mode (``TritonProcess(..., model_control=
"explicit")``). Loading is ``RepositoryModelLoad`` (tritonclient's ``load_model``), then a
warm-up of a few real inferences before the variant may be routed; unloading is
``RepositoryModelUnload`` after a drain:

1. the ``RoutingGate`` stops new calls reaching the deployment (placement's side);
2. wait until Triton's queue for the variant is empty (``nv_inference_pending_request_count``
   on the metrics endpoint, polled every ``poll_s``);
3. unload; Triton lets calls already executing finish before the model goes;
4. wait until the repository index no longer lists the variant as ready.

tritonclient and grpc errors are wrapped in :class:`ModelControlError` here.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from placement.errors import SwitchyardError
from services.agent.triton_stats import model_stats, pending_requests
from services.api.switchyard.v1 import telemetry_pb2
from services.capacity.provider import Instance

log = structlog.get_logger("switchyard.capacity")
# (instance id, variant) -> Triton's statistics when its warm-up's cold calls were done
Baselines = dict[tuple[str, str], telemetry_pb2.ModelStats]


class ModelControlError(SwitchyardError):
    """Triton refused or failed a repository operation, or a drain did not finish in time."""

    grpc_code = "UNAVAILABLE"


class RoutingGate(Protocol):
    """Who decides whether calls may reach a deployment (placement's tables, in a mesh)."""

    def routed(self, instance_id: str) -> frozenset[str]: ...

    async def stop(self, instance: Instance, variant: str) -> None: ...

    async def start(self, instance: Instance, variant: str) -> None: ...


class NoRouting:
    """A gate for servers nothing routes to through the mesh (tests, a bare provider): it
    only remembers what it was told, so ``routed`` agrees with ``start`` and ``stop``."""

    def __init__(self) -> None:
        self._routed: dict[str, frozenset[str]] = {}

    def routed(self, instance_id: str) -> frozenset[str]:
        return self._routed.get(instance_id, frozenset())

    async def stop(self, instance: Instance, variant: str) -> None:
        self._routed[instance.id] = self.routed(instance.id) - {variant}

    async def start(self, instance: Instance, variant: str) -> None:
        self._routed[instance.id] = self.routed(instance.id) | {variant}


@dataclass(frozen=True, slots=True)
class DrainReport:
    variant: str
    waited_s: float
    max_pending: int  # the most calls seen queued while draining


class ModelControl:
    """Repository operations on one instance."""

    def __init__(self, instance: Instance, *, timeout_s: float = 30.0,
                 poll_s: float = 0.05, warm_calls: int = 8, cold_calls: int = 2,
                 baselines: Baselines | None = None) -> None:
        """``baselines``: where each warm-up leaves Triton's statistics as they stood after
        the cold calls, so a reader can count from there (``(instance id, variant)`` key)."""
        self.instance = instance
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.warm_calls = warm_calls
        self.cold_calls = cold_calls
        self.baselines = baselines if baselines is not None else {}
        self._client: Any = triton_aio.InferenceServerClient(instance.endpoint)

    async def close(self) -> None:
        await self._client.close()

    async def loaded(self) -> frozenset[str]:
        """Variants the server reports READY."""
        try:
            index = await self._client.get_model_repository_index(
                as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise ModelControlError(f"{self.instance.id}: repository index: {exc}") from exc
        return frozenset(m["name"] for m in index.get("models", [])
                         if m.get("state") == "READY")

    async def load(self, variant: str) -> None:
        """Load ``variant`` and return once Triton reports it ready and it is warm. A load
        that Triton took but whose readiness or warm-up failed is unloaded before the error
        is raised: left READY, it held GPU memory that nothing routed to."""
        try:
            await self._client.load_model(variant, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise ModelControlError(f"{self.instance.id}: load {variant}: {exc}") from exc
        try:
            warmed = await self._ready_and_warm(variant)
        except ModelControlError as exc:
            await self._unload_after(variant, exc)
            raise
        log.info("capacity.loaded", instance=self.instance.id, variant=variant,
                 warm_calls=warmed)

    async def _ready_and_warm(self, variant: str) -> int:
        try:
            ready = await self._client.is_model_ready(variant, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise ModelControlError(f"{self.instance.id}: load {variant}: {exc}") from exc
        if not ready:
            raise ModelControlError(f"{self.instance.id}: {variant} loaded but not ready")
        return await self.warm(variant)

    async def _unload_after(self, variant: str, failure: ModelControlError) -> None:
        """Unload ``variant`` after its load failed past Triton's load; a failed unload is
        logged (the actor then finds it loaded and not routed: it routes or unloads it)."""
        try:
            await self._client.unload_model(variant, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            log.warning("capacity.unload_after_failed_load_failed", instance=self.instance.id,
                        variant=variant, error=str(exc), load_error=failure.message)
            return
        log.warning("capacity.unloaded_after_failed_load", instance=self.instance.id,
                    variant=variant, load_error=failure.message)

    async def warm(self, variant: str) -> int:
        """``cold_calls`` then ``warm_calls`` real inferences (zeros, batch 1) before anything
        routes to the variant: its cold first calls are not a caller's, and the statistics
        after the cold ones are kept in ``baselines``, so placement's first price of the
        variant is the warm calls' measured compute. A decoupled (streaming) variant is not
        warmed (0). A failed warm-up call fails the load."""
        try:
            config = await self._client.get_model_config(variant, as_json=True)
            if config.get("config", {}).get("model_transaction_policy", {}).get("decoupled"):
                return 0
            meta = await self._client.get_model_metadata(variant, as_json=True)
            inputs = []
            for spec in meta.get("inputs", []):
                shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
                x = triton_aio.InferInput(spec["name"], shape, spec["datatype"])
                x.set_data_from_numpy(np.zeros(shape, dtype=triton_to_np_dtype(
                    spec["datatype"])))
                inputs.append(x)
            before = (await self._statistics(variant)).inference_count
            for _ in range(self.cold_calls):
                await self._client.infer(variant, inputs, client_timeout=self.timeout_s)
            self.baselines[(self.instance.id, variant)] = await self._statistics(
                variant, at_least=before + self.cold_calls)
            for _ in range(self.warm_calls):
                await self._client.infer(variant, inputs, client_timeout=self.timeout_s)
        except (InferenceServerException, KeyError, ValueError, TypeError) as exc:
            raise ModelControlError(f"{self.instance.id}: warm-up of {variant}: {exc}") from exc
        return self.cold_calls + self.warm_calls

    async def _statistics(self, variant: str, at_least: int = 0) -> telemetry_pb2.ModelStats:
        """``variant``'s Triton statistics once they count ``at_least`` inferences: Triton
        counts a call when it releases the request, which can come after the client has the
        response, so a read right after the cold calls could miss the last of them (and the
        baseline then bill a cold call's compute to the warm price)."""
        t0 = time.monotonic()
        while True:
            stats = await self._client.get_inference_statistics(
                variant, as_json=False, client_timeout=self.timeout_s)
            (base,) = model_stats(stats, {variant: True})
            if base.inference_count >= at_least:
                return base
            if time.monotonic() - t0 > self.timeout_s:
                raise ModelControlError(
                    f"{self.instance.id}: {variant}'s statistics count {base.inference_count} "
                    f"inferences {self.timeout_s:g} s after the warm-up's {at_least}")
            await asyncio.sleep(self.poll_s)  # the poll interval of this wait

    async def pending(self, variant: str) -> int:
        """Calls queued for ``variant`` in Triton right now."""
        try:
            text = await asyncio.to_thread(_http_get, self.instance.metrics_url, 2.0)
        except (OSError, urllib.error.URLError) as exc:
            raise ModelControlError(f"{self.instance.id}: metrics: {exc}") from exc
        return pending_requests(text, [variant])

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        """Stop routing, wait for the queue to empty, unload, wait until it is gone."""
        t0 = time.monotonic()
        await gate.stop(self.instance, variant)
        most = 0
        while (n := await self.pending(variant)) > 0:
            most = max(most, n)
            if time.monotonic() - t0 > self.timeout_s:
                raise ModelControlError(f"{self.instance.id}: {variant} still has {n} queued "
                                        f"after {self.timeout_s:g} s of draining")
            await asyncio.sleep(self.poll_s)
        try:
            await self._client.unload_model(variant, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise ModelControlError(f"{self.instance.id}: unload {variant}: {exc}") from exc
        while variant in await self.loaded():
            if time.monotonic() - t0 > self.timeout_s:
                raise ModelControlError(f"{self.instance.id}: {variant} still loaded "
                                        f"{self.timeout_s:g} s after unload")
            await asyncio.sleep(self.poll_s)
        report = DrainReport(variant, time.monotonic() - t0, most)
        log.info("capacity.unloaded", instance=self.instance.id, variant=variant,
                 waited_s=round(report.waited_s, 3), max_pending=most)
        return report


def _http_get(url: str, timeout_s: float) -> str:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"metrics url {url!r} is not http(s)")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked
        return str(resp.read().decode())
