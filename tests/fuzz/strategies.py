"""Hypothesis strategies for hostile input: request bytes, metadata, placement API messages."""

from __future__ import annotations

import math

from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from services.api.switchyard.v1 import fleet_pb2, placement_pb2

HINT_HEADERS = ("x-slo-ms", "x-min-quality", "x-max-cost-usd", "x-tenant", "x-allowed-regions",
                "x-request-id", "x-fail-fast", "x-routing-profile")
REGIONS = ("r-east", "r-west", "r-central")
NAMES = st.one_of(st.sampled_from(["summarize", "summarize-small", "generate", "r-east", "aws",
                                   "gpu-fast", "gpu-cheap", "on-demand", "spot", "*", ""]),
                  st.text(max_size=40))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)

_number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["1_000", " 5 ", "0x10", "1e309", "-0", "nan", "inf", "", "٣", "1e-400"]))


def metadata() -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    key = st.one_of(st.sampled_from(HINT_HEADERS), st.text(max_size=12).map(lambda s: "x-" + s),
                    st.text(max_size=12), st.sampled_from(["authorization", "x-data-bin"]))
    value = st.one_of(st.text(max_size=64), _number_text, st.binary(max_size=16),
                      st.lists(st.sampled_from([*REGIONS, "mars", " ", ""]), max_size=4)
                      .map(",".join))
    return st.lists(st.tuples(key, value), max_size=12)


def infer_requests() -> st.SearchStrategy[service_pb2.ModelInferRequest]:
    """Well-formed ModelInferRequests, tensors included, as tritonclient would send them."""
    def build(name: str, version: str, rid: str, n: int, raw: list[bytes],
              params: dict[str, str]) -> service_pb2.ModelInferRequest:
        req = service_pb2.ModelInferRequest(model_name=name, model_version=version, id=rid)
        for i in range(n):
            t = req.inputs.add(name=f"INPUT{i}", datatype="FP32", shape=[1, 4])
            t.contents.fp32_contents.extend([float(i)] * 4)
        req.raw_input_contents.extend(raw)
        for k, v in params.items():
            req.parameters[k].string_param = v
        return req

    return st.builds(build, st.text(min_size=1, max_size=80), st.text(max_size=8),
                     st.text(max_size=16), st.integers(0, 3),
                     st.lists(st.binary(max_size=300), max_size=3),
                     st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))


def variant_refs() -> st.SearchStrategy[fleet_pb2.VariantRef]:
    return st.builds(fleet_pb2.VariantRef, logical_model=NAMES, variant=NAMES, quality=FLOATS)


def backends() -> st.SearchStrategy[fleet_pb2.Backend]:
    return st.builds(
        fleet_pb2.Backend, id=NAMES, endpoint=st.one_of(NAMES, st.just("127.0.0.1:1")),
        cloud=NAMES, region=st.one_of(st.sampled_from(REGIONS), NAMES), accelerator=NAMES,
        accelerator_count=st.integers(0, 2**32 - 1), price_class=NAMES,
        variants=st.lists(variant_refs(), max_size=3),
        max_concurrency=st.integers(0, 2**32 - 1))


# Numbers a validation gap lets through (P1, P2 in CAMPAIGNS.md), drawn often, then any float.
EDGE_FLOATS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1.0,
                                         1.0000001, 2.0, 1e308]), FLOATS)


def plausible_backends() -> st.SearchStrategy[fleet_pb2.Backend]:
    """Backends of the test mesh's own regions, clouds, hardware and models (the checks an
    arbitrary backend fails first pass), with arbitrary variant names and qualities: at 300
    arbitrary backends per run P1 (quality 2 or NaN accepted) was found in 0 of 3 runs."""
    def build(rc: tuple[str, str], bid: str, accelerator: str, price_class: str,
              count: int, conc: int, variants: list[fleet_pb2.VariantRef]
              ) -> fleet_pb2.Backend:
        return fleet_pb2.Backend(id=bid, endpoint="127.0.0.1:1", region=rc[0], cloud=rc[1],
                                 accelerator=accelerator, price_class=price_class,
                                 accelerator_count=count, max_concurrency=conc,
                                 variants=variants)

    refs = st.builds(fleet_pb2.VariantRef,
                     logical_model=st.one_of(st.sampled_from(["summarize", "generate"]), NAMES),
                     variant=st.one_of(st.sampled_from(["summarize-small", "generate-small"]),
                                       NAMES),
                     quality=EDGE_FLOATS)
    return st.builds(build, st.sampled_from([("r-east", "aws"), ("r-west", "aws"),
                                             ("r-central", "gcp")]),
                     st.sampled_from(["new-1", "new-2", "east-fast"]),
                     st.sampled_from(["gpu-fast", "gpu-cheap"]),
                     st.sampled_from(["on-demand", "spot", ""]),
                     st.integers(0, 4), st.integers(0, 4), st.lists(refs, max_size=3))


def prices() -> st.SearchStrategy[fleet_pb2.Price]:
    """Arbitrary prices, and prices for hardware the test mesh really has (arbitrary amount)."""
    arbitrary = st.builds(fleet_pb2.Price, accelerator=NAMES, cloud=NAMES, region=NAMES,
                          price_class=NAMES, usd_per_gpu_hour=FLOATS, source=NAMES, as_of=NAMES)
    real = st.builds(fleet_pb2.Price, accelerator=st.sampled_from(["gpu-fast", "gpu-cheap"]),
                     cloud=st.sampled_from(["aws", "gcp"]),
                     region=st.sampled_from(["*", *REGIONS]),
                     price_class=st.sampled_from(["on-demand", "spot"]),
                     usd_per_gpu_hour=EDGE_FLOATS)
    return st.one_of(arbitrary, real)


def availability_requests() -> st.SearchStrategy[placement_pb2.SetAvailabilityRequest]:
    return st.builds(placement_pb2.SetAvailabilityRequest,
                     scope=st.integers(-2, 8), target=NAMES, availability=st.integers(-2, 8))


def update_prices() -> st.SearchStrategy[placement_pb2.UpdatePricesRequest]:
    return st.builds(placement_pb2.UpdatePricesRequest, prices=st.lists(prices(), max_size=3),
                     replace=st.booleans())
