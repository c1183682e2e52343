"""Property-based fuzzing of placement's API validation, calling the servicer directly.

Messages are built by hypothesis from the real proto classes. Properties: a call either
answers or raises a ``SwitchyardError`` (which the interceptor turns into a clear status),
never another exception; and whatever it accepted leaves the fleet routable — every route
table still builds, with finite costs and latencies and qualities within [0, 1].
"""

from __future__ import annotations

import asyncio
import math
import os
import pathlib
import tempfile
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement.errors import NotRegistered, SwitchyardError
from services.api.switchyard.v1 import placement_pb2
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.fuzz.strategies import (
    availability_requests,
    backends,
    plausible_backends,
    update_prices,
)
from tests.mesh_harness import mesh_config

# 100 per property: with the directed strategies (plausible backends, edge-case numbers) the
# validation gaps this fuzzer was written for are found at 50 in 4 of 5 seeds each (P1, P2;
# P3 5 of 5), where 300 arbitrary messages found P1 and P2 in 0 of 3 (CAMPAIGNS.md). Longer
# campaigns: SWITCHYARD_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class FakeContext:
    """The parts of grpc.aio.ServicerContext the placement servicer touches."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def fresh_service() -> PlacementService:
    return build_service(mesh_config(pathlib.Path(tempfile.mkdtemp())), preregister=True)


def call(service: PlacementService, method: str, request: Any) -> Any:
    async def run() -> Any:
        return await getattr(service, method)(request, FakeContext())
    try:
        return asyncio.run(run())
    except SwitchyardError as exc:
        return exc


def assert_routable(service: PlacementService) -> None:
    now = time.monotonic()
    for model in service.builder.catalog.models:
        for region in service.builder.catalog.regions:
            for c in service.builder.build(model, region, now):
                assert math.isfinite(c.cost_usd) and c.cost_usd >= 0, c
                assert math.isfinite(c.latency_p95_ms) and c.latency_p95_ms >= 0, c
                assert 0.0 <= c.quality <= 1.0, c
    service.hub.rebuild()





@FUZZ
@given(st.lists(st.one_of(backends(), plausible_backends()), min_size=1, max_size=4))
def test_register_backend_answers_or_refuses_clearly(bs: list[Any]) -> None:
    service = fresh_service()
    for b in bs:
        call(service, "RegisterBackend", placement_pb2.RegisterBackendRequest(backend=b))
        assert_routable(service)



@FUZZ
@given(update_prices())
def test_update_prices_answers_or_refuses_clearly(req: Any) -> None:
    service = fresh_service()
    call(service, "UpdatePrices", req)
    assert_routable(service)



@FUZZ
@given(availability_requests())
def test_set_availability_answers_or_refuses_clearly(req: Any) -> None:
    service = fresh_service()
    call(service, "SetAvailability", req)
    assert_routable(service)


@FUZZ
@given(st.text(max_size=40))
def test_deregister_answers(backend_id: str) -> None:
    service = fresh_service()
    known = backend_id in service.fleet.backends
    out = call(service, "DeregisterBackend",
               placement_pb2.DeregisterBackendRequest(backend_id=backend_id))
    # A registered id is removed; any other is NOT_FOUND, never a crash.
    assert isinstance(out, NotRegistered) if not known else not isinstance(out, SwitchyardError)
    assert_routable(service)
