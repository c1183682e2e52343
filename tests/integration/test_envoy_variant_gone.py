"""A variant its backend no longer serves, in a real Envoy in front of a real Triton (the whole
Switchyard config as a static bootstrap, built by ``services/xds`` as placement pushes it).

Triton answers NOT_FOUND "Request for unknown model: 'v' is not found" (or "has no available
versions" while it unloads ``v``) when the route table is behind: an unload, a server shutting
down on SIGTERM. The Python edge retries that at the next deployment (``VARIANT_GONE``,
``placement.attempts``); Envoy has no retry condition for a gRPC NOT_FOUND, so before, an
Envoy edge passed it to the caller for a model that exists. Now the route's retry policy
matches Triton's message (``retriable_headers``) and the listener's Lua answers a variant
gone everywhere as UNAVAILABLE, saying why, as the Python edge does.

The route here names deployments Triton never loaded, so nothing depends on timing: the
first attempt is always answered NOT_FOUND.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, REGION, Fleet, _wait_port
from placement.attempts import GONE_HINT
from services.api.switchyard.v1 import placement_pb2
from services.demo import infer_with_trailers
from services.ports import free_port
from services.xds import resources
from services.xds.resources import ModelRoutes
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

GONE = f"{ec.BACKEND}-a/{MODEL}-gone"  # variants the Triton never loaded
ALSO_GONE = f"{ec.BACKEND}-b/{MODEL}-unloaded"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as f:
        f.start_triton()
        yield f


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Edge:
    def __init__(self, fleet: Fleet, order: tuple[str, ...]) -> None:
        """Switchyard's listener, clusters and routes for ``order``, every deployment on
        the one Triton (whatever variant it names)."""
        self.port, self.admin_port = free_port(), free_port()
        c = ec.plain(fleet.triton_address, "127.0.0.1:1", self.port, self.admin_port)
        ec.switchyard(c)
        c.access_log = []  # no placement here
        for d in order:
            backend, variant = d.split("/")
            c.clusters[resources.cluster_name(d)] = _dict(resources.deployment_cluster(
                placement_pb2.Candidate(deployment_id=d, backend_id=backend,
                                        endpoint=fleet.triton_address, variant=variant,
                                        region=REGION), ec.SETTINGS))
        c.clusters[ec.AGG_CLUSTER] = _dict(resources.model_cluster(ec.AGG_CLUSTER, order,
                                                                   ec.SETTINGS))
        models = {MODEL: ModelRoutes(order, (), frozenset(order), 1000.0,
                                     dict.fromkeys(order, 2.5e-7))}
        c.route_config = _dict(resources.route_configuration(REGION, models, ec.SETTINGS))
        c.route_config.pop("name", None)
        fleet.start_envoy(f"gone-{self.port}", c.bootstrap())
        self.address = f"127.0.0.1:{self.port}"
        _wait_port(self.address, 30)
        eventually_sync(lambda: self.stat("upstream_rq_retry") is not None, 30,
                        "Envoy's admin answers with the model cluster's counters")

    def stat(self, name: str) -> int | None:
        """The model (aggregate) cluster's counter ``name``, where the router counts (Envoy
        writes the ``:`` of its name as ``_``)."""
        key = f"cluster.{ec.AGG_CLUSTER.replace(':', '_')}.{name}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?"
                                        f"filter=^{key}$", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
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


def test_a_deployment_whose_variant_is_gone_is_retried_at_the_next(fleet: Fleet) -> None:
    edge = Edge(fleet, (GONE, ec.DEPLOYMENT))
    model_name, trailers = edge.call()  # before: NOT_FOUND "... 'tiny-gone' is not found"
    assert model_name == ec.VARIANT
    assert trailers["x-served-by"] == ec.DEPLOYMENT
    assert trailers["x-attempts"] == "2"
    assert edge.stat("upstream_rq_retry") == 1


def test_a_variant_gone_from_every_deployment_is_unavailable_and_says_why(
        fleet: Fleet) -> None:
    edge = Edge(fleet, (GONE, ALSO_GONE))
    with pytest.raises(InferenceServerException) as err:
        edge.call()
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    message = str(err.value.message())
    assert "is not found" in message and GONE_HINT.strip(" ()") in message
    assert (edge.stat("upstream_rq_retry") or 0) >= 1  # the second deployment was tried


def test_a_version_the_caller_named_is_its_own_not_found_and_not_retried(
        fleet: Fleet) -> None:
    edge = Edge(fleet, (ec.DEPLOYMENT, GONE))
    assert edge.call()[0] == ec.VARIANT  # the route serves
    with pytest.raises(InferenceServerException) as err:
        edge.call(version="7")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "version 7 is not found" in str(err.value.message())
    assert edge.stat("upstream_rq_retry") == 0
