"""A variant its backend no longer serves, in a real Envoy in front of a real Triton (the whole
Switchyard config as a static bootstrap, built by ``services/xds`` as placement pushes it).

Triton answers NOT_FOUND "Request for unknown model: 'v' is not found" (or "has no available
versions" while it unloads ``v``) when the route table is behind: an unload, a server shutting
down on SIGTERM. The Python edge retries that at the next deployment (``VARIANT_GONE``,
``placement.attempts``); Envoy has no retry condition for a gRPC NOT_FOUND, so before, an
Envoy edge passed it to the caller for a model that exists. Now the route's retry policy
matches Triton's message (``retriable_headers``) and the listener's Lua answers a variant
gone everywhere as UNAVAILABLE, saying why, as the Python edge does.

The route here names deployments Triton never loaded, so the first attempt is always answered
NOT_FOUND; its per-try timeout is past the call's (``NO_HEDGE``), so a slow answer on a loaded
host is not hedged into one attempt more.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tritonclient.utils import InferenceServerException

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, Fleet
from placement.attempts import GONE_HINT
from tests.envoy_static import NO_HEDGE, StaticEdge

pytestmark = pytest.mark.integration

GONE = f"{ec.BACKEND}-a/{MODEL}-gone"  # variants the Triton never loaded
ALSO_GONE = f"{ec.BACKEND}-b/{MODEL}-unloaded"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet() as f:
        f.start_triton()
        yield f


def test_a_deployment_whose_variant_is_gone_is_retried_at_the_next(fleet: Fleet) -> None:
    edge = StaticEdge(fleet, (GONE, ec.DEPLOYMENT), settings=NO_HEDGE)
    model_name, trailers = edge.call()  # before: NOT_FOUND "... 'tiny-gone' is not found"
    assert model_name == ec.VARIANT
    assert trailers["x-served-by"] == ec.DEPLOYMENT
    assert trailers["x-attempts"] == "2"
    assert edge.stat("upstream_rq_retry") == 1


def test_a_variant_gone_from_every_deployment_is_unavailable_and_says_why(
        fleet: Fleet) -> None:
    edge = StaticEdge(fleet, (GONE, ALSO_GONE), settings=NO_HEDGE)
    with pytest.raises(InferenceServerException) as err:
        edge.call()
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    message = str(err.value.message())
    assert "is not found" in message and GONE_HINT.strip(" ()") in message
    assert (edge.stat("upstream_rq_retry") or 0) >= 1  # the second deployment was tried


def test_a_version_the_caller_named_is_its_own_not_found_and_not_retried(
        fleet: Fleet) -> None:
    edge = StaticEdge(fleet, (ec.DEPLOYMENT, GONE), settings=NO_HEDGE)
    assert edge.call()[0] == ec.VARIANT  # the route serves
    with pytest.raises(InferenceServerException) as err:
        edge.call(version="7")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "version 7 is not found" in str(err.value.message())
    assert edge.stat("upstream_rq_retry") == 0
