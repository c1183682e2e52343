"""An order whose deployments all serve one variant, in a real Envoy in front of a real Triton
(the whole Switchyard config as a static bootstrap, benchmarks/envoy_configs.py): its aggregate
has no upstream Lua, and a call with the logical name is still served as the variant (the
listener's Lua appended it), with the trailers of the attempt that answered."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, VARIANT, Fleet, _wait_port
from services.demo import infer_with_trailers
from services.ports import free_port
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as f:
        f.start_triton()
        yield f


def _envoy(fleet: Fleet) -> str:
    port = free_port()
    c = ec.plain(fleet.triton_address, "127.0.0.1:1", port, free_port())
    ec.switchyard(c)
    c.access_log = []  # no placement here
    upstream = c.clusters[ec.AGG_CLUSTER]["typed_extension_protocol_options"][
        ec.PROTOCOL_OPTIONS]["http_filters"]
    assert "switchyard.variant_rewrite" not in [f["name"] for f in upstream]
    fleet.start_envoy(f"one-variant-{port}", c.bootstrap())
    address = f"127.0.0.1:{port}"
    _wait_port(address, 30)
    return address


def test_a_one_variant_order_is_served_as_the_variant_without_the_upstream_lua(
        fleet: Fleet) -> None:
    address = _envoy(fleet)
    inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.ones((1, 16), np.float32))
    answers: list[tuple[str, dict[str, str]]] = []

    def answered() -> bool:
        client = grpcclient.InferenceServerClient(address)
        try:
            result, trailers = infer_with_trailers(client, MODEL, [inp], [], 5.0)
        except InferenceServerException as exc:
            # Envoy's listener may take a moment after the port opens; a name Triton does
            # not serve (the variant not appended) fails at once
            if "not found" in str(exc).lower() or "unknown model" in str(exc).lower():
                raise
            return False
        finally:
            client.close()
        answers.append((str(result.get_response().model_name), trailers))
        return True

    # Every answer is the variant from its one deployment; one answered at its first attempt
    # shows the name was right the first time. (On a loaded host a cold Triton's first answer
    # can pass the route's per-try timeout and be hedged at the same deployment: x-attempts 2.)
    eventually_sync(lambda: answered() and answers[-1][1]["x-attempts"] == "1", 30,
                    "Envoy answers a call at its first attempt")
    for model_name, trailers in answers:
        assert model_name == VARIANT
        assert trailers["x-served-by"] == ec.DEPLOYMENT
        assert trailers["x-switchyard-path"] == "envoy"
        assert trailers["x-request-id"]
