"""services/xds/rewrite.py inside a real Envoy in front of a real Triton (static bootstrap
from benchmarks/envoy_configs.py): the listener appends the first deployment's variant once;
the upstream Lua appends the attempt's own variant only when the body names another one."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, VARIANT, Fleet, _wait_port
from services.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as f:
        f.start_triton()
        yield f


def _envoy(fleet: Fleet, first_variant: str | None) -> str:
    """The whole Switchyard config with rewrite.py's scripts; the model routes say the first
    deployment serves ``first_variant`` (None: no metadata, as without placement's key)."""
    port = free_port()
    c = ec.plain(fleet.triton_address, "127.0.0.1:1", port, free_port())
    ec.sy_first_variant(c)
    c.access_log = []  # no placement here
    ec.set_first_variant(c, first_variant)
    fleet.start_envoy(f"rewrite-{port}", c.bootstrap())
    address = f"127.0.0.1:{port}"
    _wait_port(address, 30)
    return address


def _infer(address: str, model: str) -> str:
    """One ModelInfer with the logical name; the model Triton says it ran (a name Triton does
    not serve fails the call: NOT_FOUND)."""
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.ones((1, 16), np.float32))
    try:
        last: Exception | None = None
        for _ in range(50):  # Envoy's listener may take a moment after the port opens
            try:
                result = client.infer(model, [inp], client_timeout=5.0)
                return str(result.get_response().model_name)
            except InferenceServerException as exc:
                last = exc
                if "not found" in str(exc).lower() or "unknown model" in str(exc).lower():
                    raise
        raise AssertionError(f"no answer from {address}: {last}")
    finally:
        client.close()


def test_the_listener_names_the_first_variant_and_triton_serves_it(fleet: Fleet) -> None:
    assert _infer(_envoy(fleet, VARIANT), MODEL)== VARIANT


def test_an_attempt_on_another_variant_is_rewritten_upstream(fleet: Fleet) -> None:
    # The route says the first deployment serves "tiny-v0"; the one Envoy reaches serves
    # tiny-v1, so the upstream Lua must append tiny-v1 after the listener's tiny-v0.
    assert _infer(_envoy(fleet, "tiny-v0"), MODEL)== VARIANT


def test_without_the_routes_first_variant_the_upstream_rewrite_still_happens(
        fleet: Fleet) -> None:
    assert _infer(_envoy(fleet, None), MODEL)== VARIANT
