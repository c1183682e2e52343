"""The ``kubernetes`` provider: one Deployment per pool, scaled through its scale subresource.

- **add**: ``GET .../deployments/{name}/scale``, then a merge patch of ``spec.replicas``
  (+ count); wait (polling the pods of ``status.selector``) until that many more pods are
  Ready; each new pod is an :class:`Instance` at ``podIP:grpc_port``.
- **remove** (a pod the actor already drained): annotate it with the lowest
  ``controller.kubernetes.io/pod-deletion-cost``, so the ReplicaSet removes *that* pod when
  the replicas go down by one, then wait until it is gone.

Plain HTTP against the documented API (aiohttp), a bearer token when given; HTTP and API
errors are wrapped in :class:`ProviderError`. Tested against ``tests/kubernetes_fake.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from placement.errors import SwitchyardError
from services.capacity.provider import Instance

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LOWEST_COST = str(-(2**31))  # int32 minimum: removed before every other pod
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class ProviderError(SwitchyardError):
    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class KubePool:
    deployment: str
    grpc_port: int = 8001
    metrics_port: int = 8002


class KubernetesProvider:
    def __init__(self, api_url: str, namespace: str, pools: Mapping[str, KubePool], *,
                 token: str | None = None, timeout_s: float = 600.0,
                 poll_s: float = 1.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.pools = dict(pools)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        self._instances: dict[str, list[Instance]] = {p: [] for p in pools}

    async def close(self) -> None:
        await self._session.close()

    def instances(self, pool: str) -> list[Instance]:
        return list(self._instances[pool])

    def _scale_path(self, pool: str) -> str:
        return (f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
                f"{self.pools[pool].deployment}/scale")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._session.request(
                    method, self.api_url + path, data=None if body is None else json.dumps(body),
                    headers=MERGE_PATCH if body is not None else None) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise ProviderError(f"kubernetes {method} {path}: {resp.status} "
                                        f"{data.get('reason', '')}: {data.get('message', '')}")
                return data
        except aiohttp.ClientError as exc:
            raise ProviderError(f"kubernetes {method} {path}: {exc}") from exc

    async def _ready_pods(self, pool: str, selector: str) -> list[Instance]:
        spec = self.pools[pool]
        data = await self._call("GET", f"/api/v1/namespaces/{self.namespace}/pods"
                                       f"?labelSelector={selector}")
        out = []
        for item in data.get("items", []):
            conditions = item.get("status", {}).get("conditions", [])
            ip = item.get("status", {}).get("podIP")
            if ip and any(c.get("type") == "Ready" and c.get("status") == "True"
                          for c in conditions):
                out.append(Instance(item["metadata"]["name"], pool, f"{ip}:{spec.grpc_port}",
                                    f"http://{ip}:{spec.metrics_port}/metrics"))
        return out

    async def refresh(self, pool: str) -> list[Instance]:
        """Re-read the pool's Ready pods (e.g. after a restart or a reclaim)."""
        scale = await self._call("GET", self._scale_path(pool))
        self._instances[pool] = await self._ready_pods(pool, scale["status"]["selector"])
        return self.instances(pool)

    async def add(self, pool: str, count: int) -> list[Instance]:
        scale = await self._call("GET", self._scale_path(pool))
        selector = scale["status"]["selector"]
        before = {i.id for i in await self._ready_pods(pool, selector)}
        await self._call("PATCH", self._scale_path(pool),
                         {"spec": {"replicas": scale["spec"]["replicas"] + count}})
        deadline = time.monotonic() + self.timeout_s
        while True:
            ready = await self._ready_pods(pool, selector)
            new = [i for i in ready if i.id not in before]
            if len(new) >= count:
                self._instances[pool] = ready
                return new
            if time.monotonic() > deadline:
                raise ProviderError(f"{pool}: {len(new)} of {count} new pods Ready after "
                                    f"{self.timeout_s:g} s")
            await asyncio.sleep(self.poll_s)

    async def remove(self, instance: Instance) -> None:
        pool = instance.pool
        await self._call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{instance.id}",
                         {"metadata": {"annotations": {DELETION_COST: LOWEST_COST}}})
        scale = await self._call("GET", self._scale_path(pool))
        await self._call("PATCH", self._scale_path(pool),
                         {"spec": {"replicas": max(scale["spec"]["replicas"] - 1, 0)}})
        deadline = time.monotonic() + self.timeout_s
        while any(i.id == instance.id for i in await self.refresh(pool)):
            if time.monotonic() > deadline:
                raise ProviderError(f"{pool}: pod {instance.id} still there after "
                                    f"{self.timeout_s:g} s")
            await asyncio.sleep(self.poll_s)
