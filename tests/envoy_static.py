"""A real Envoy with the whole Switchyard config for one model as a static bootstrap, built by
``services/xds`` as placement pushes it, in front of ``benchmarks._fleet``'s one real Triton:
for tests that need a route order placement would not keep (a deployment whose variant is
gone, a backend that hangs) without racing placement's next push."""

from __future__ import annotations

import urllib.request
from dataclasses import replace
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import json_format

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, REGION, Fleet, _wait_port
from services.api.switchyard.v1 import placement_pb2
from services.demo import infer_with_trailers
from services.ports import free_port
from services.xds import resources
from services.xds.envoy_types import EnvoySettings
from services.xds.resources import ModelRoutes
from tests.mesh_harness import eventually_sync

# An attempt's floor past any call's client timeout here: the route's per-try timeout (the
# SLO's share, at least 250 ms) never starts a hedge, which on a loaded host (load 15+) took a
# slow first answer for a failed attempt and counted one attempt more than the order explains.
NO_HEDGE = replace(ec.SETTINGS, min_attempt_timeout_s=30.0)


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class StaticEdge:
    def __init__(self, fleet: Fleet, order: tuple[str, ...],
                 endpoints: dict[str, str] | None = None,
                 settings: EnvoySettings = ec.SETTINGS) -> None:
        """Switchyard's listener, clusters and routes for ``order`` (deployment ids
        ``backend/variant``), each at ``endpoints[deployment]``, else the fleet's Triton
        (whatever variant it names), compiled with ``settings`` (:data:`NO_HEDGE` for a
        test that counts attempts: a loaded host's slow answer is not hedged)."""
        self.port, self.admin_port = free_port(), free_port()
        c = ec.plain(fleet.triton_address, "127.0.0.1:1", self.port, self.admin_port)
        ec.switchyard(c)
        c.access_log = []  # no placement here
        for d in order:
            backend, variant = d.split("/")
            endpoint = (endpoints or {}).get(d, fleet.triton_address)
            c.clusters[resources.cluster_name(d)] = _dict(resources.deployment_cluster(
                placement_pb2.Candidate(deployment_id=d, backend_id=backend,
                                        endpoint=endpoint, variant=variant,
                                        region=REGION), settings))
        c.clusters[ec.AGG_CLUSTER] = _dict(resources.model_cluster(ec.AGG_CLUSTER, order,
                                                                   settings))
        models = {MODEL: ModelRoutes(order, (), frozenset(order), 1000.0,
                                     dict.fromkeys(order, 2.5e-7))}
        c.route_config = _dict(resources.route_configuration(REGION, models, settings))
        c.route_config.pop("name", None)
        fleet.start_envoy(f"static-{self.port}", c.bootstrap())
        self.address = f"127.0.0.1:{self.port}"
        _wait_port(self.address, 30)
        eventually_sync(lambda: self.stat("upstream_rq_retry") is not None, 30,
                        "Envoy's admin answers with the model cluster's counters")

    def admin(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                        timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def stat(self, name: str) -> int | None:
        """The model (aggregate) cluster's counter ``name``, where the router counts (Envoy
        writes the ``:`` of its name as ``_``)."""
        key = f"cluster.{ec.AGG_CLUSTER.replace(':', '_')}.{name}"
        text = self.admin(f"/stats?filter=^{key}$")
        for line in (text or "").splitlines():
            k, _, v = line.partition(": ")
            if k == key:
                return int(v)
        return None

    def call(self, version: str = "") -> tuple[str, dict[str, str]]:
        """One ModelInfer with the logical name: the model Triton ran and the trailers."""
        client = grpcclient.InferenceServerClient(self.address)
        inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        inp.set_data_from_numpy(np.ones((1, 16), np.float32))
        try:
            if version:
                client.infer(MODEL, [inp], model_version=version, client_timeout=10.0)
                raise AssertionError("a version Triton does not have was served")
            result, trailers = infer_with_trailers(client, MODEL, [inp], (), 10.0)
            return str(result.get_response().model_name), trailers
        finally:
            client.close()
