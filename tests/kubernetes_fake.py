"""FakeKubernetes: an in-process HTTP fake of the few Kubernetes API endpoints capacity uses.

It is a FAKE, not Kubernetes: no scheduler, no kubelet, no watch, one namespace at a time.
It follows the documented API for exactly these endpoints:

- ``GET /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`` (an ``autoscaling/v1``
  ``Scale``: ``spec.replicas``, ``status.replicas``, ``status.selector``)
- ``PATCH`` the same path with ``application/merge-patch+json`` ``{"spec": {"replicas": n}}``
- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v`` (a ``PodList``; ``status.podIP``
  and the ``Ready`` condition)
- ``PATCH /api/v1/namespaces/{ns}/pods/{name}`` (merge patch of ``metadata.annotations``)

Scaling down removes the pods with the lowest ``controller.kubernetes.io/pod-deletion-cost``
first (then the newest), as the ReplicaSet controller does. A new pod becomes Ready after
:meth:`FakeKubernetes.tick` is called ``ready_after_ticks`` times (the test stands in for the
kubelet); with ``token`` set every request needs ``Authorization: Bearer <token>``, else 401.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass
class FakePod:
    name: str
    labels: dict[str, str]
    ip: str
    serial: int
    ticks_to_ready: int
    annotations: dict[str, str] = field(default_factory=dict)

    def json(self, ns: str) -> dict[str, Any]:
        ready = "True" if self.ticks_to_ready <= 0 else "False"
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": ns, "labels": self.labels,
                             "annotations": self.annotations},
                "status": {"podIP": self.ip, "phase": "Running",
                           "conditions": [{"type": "Ready", "status": ready}]}}


@dataclass
class FakeDeployment:
    name: str
    labels: dict[str, str]
    replicas: int = 0


class FakeKubernetes:
    """See the module docstring. ``await fake.start()``; ``fake.address`` is the URL."""

    def __init__(self, namespace: str = "switchyard", *, token: str | None = None,
                 ready_after_ticks: int = 1) -> None:
        self.namespace = namespace
        self.token = token
        self.ready_after_ticks = ready_after_ticks
        self.deployments: dict[str, FakeDeployment] = {}
        self.pods: dict[str, FakePod] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []  # (path, body)
        self.pod_lists = 0  # pod list requests served
        self.port = 0
        self._serial = 0
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_deployment(self, name: str, labels: dict[str, str]) -> None:
        self.deployments[name] = FakeDeployment(name, labels)

    def tick(self) -> None:
        """One kubelet step: every pod still starting gets one step closer to Ready."""
        for pod in self.pods.values():
            pod.ticks_to_ready -= 1

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        scale = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
        app.router.add_get(scale, self._get_scale)
        app.router.add_patch(scale, self._patch_scale)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._list_pods)
        app.router.add_patch("/api/v1/namespaces/{ns}/pods/{name}", self._patch_pod)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        if request.match_info.get("ns") not in (None, self.namespace):
            return _status(404, "NotFound", f"namespace {request.match_info['ns']!r}")
        return await handler(request)

    def _pods_of(self, d: FakeDeployment) -> list[FakePod]:
        return sorted((p for p in self.pods.values()
                       if all(p.labels.get(k) == v for k, v in d.labels.items())),
                      key=lambda p: p.serial)

    def _scale_json(self, d: FakeDeployment) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": d.name, "namespace": self.namespace},
                "spec": {"replicas": d.replicas},
                "status": {"replicas": len(self._pods_of(d)),
                           "selector": ",".join(f"{k}={v}" for k, v in d.labels.items())}}

    async def _get_scale(self, request: web.Request) -> web.Response:
        d = self.deployments.get(request.match_info["name"])
        if d is None:
            return _status(404, "NotFound", f"deployments.apps {request.match_info['name']!r}")
        return web.json_response(self._scale_json(d))

    async def _patch_scale(self, request: web.Request) -> web.Response:
        d = self.deployments.get(request.match_info["name"])
        if d is None:
            return _status(404, "NotFound", f"deployments.apps {request.match_info['name']!r}")
        if request.content_type != "application/merge-patch+json":
            return _status(415, "UnsupportedMediaType", request.content_type)
        body = json.loads(await request.text())
        self.patches.append((request.path, body))
        replicas = body.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            return _status(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}")
        d.replicas = replicas
        pods = self._pods_of(d)
        for _ in range(replicas - len(pods)):
            self._serial += 1
            name = f"{d.name}-{self._serial:05d}"
            self.pods[name] = FakePod(name, dict(d.labels), f"10.0.0.{self._serial}",
                                      self._serial, self.ready_after_ticks)
        if len(pods) > replicas:
            doomed = sorted(pods, key=lambda p: (int(p.annotations.get(DELETION_COST, "0")),
                                                 -p.serial))[:len(pods) - replicas]
            for p in doomed:
                del self.pods[p.name]
        return web.json_response(self._scale_json(d))

    async def _list_pods(self, request: web.Request) -> web.Response:
        self.pod_lists += 1
        wanted = dict(kv.split("=", 1) for kv in request.query.get("labelSelector", "").split(",")
                      if kv)
        items = [p.json(self.namespace) for p in sorted(self.pods.values(), key=lambda p: p.serial)
                 if all(p.labels.get(k) == v for k, v in wanted.items())]
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "items": items})

    async def _patch_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(404, "NotFound", f"pods {request.match_info['name']!r}")
        body = json.loads(await request.text())
        self.patches.append((request.path, body))
        for k, v in body.get("metadata", {}).get("annotations", {}).items():
            if v is None:
                pod.annotations.pop(k, None)
            else:
                pod.annotations[k] = str(v)
        return web.json_response(pod.json(self.namespace))


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                              "reason": reason, "message": message, "code": code}, status=code)
