"""Two edge series an operator reads, on an edge run as the operator runs it
(``tests/metrics_harness.py``: ``python -m services.cli edge`` with its /metrics on a real port):

- ``switchyard_edge_inflight{kind}``: the calls (``unary``) and streams (``stream``) the edge
  is serving now. Held in a parked Triton (the demo model's ``hang`` knob: the backend still
  answers its health checks, so nothing is ejected or given up), the gauge reads the number
  held; after every way a call ends it is back to exactly 0: answered, refused, failed, ended
  by the edge, cancelled by its caller (a stream after its first response, whose upstream the
  edge then drains, and one still waiting), past its deadline, and given up by the edge on a
  stopped backend (SIGSTOP).
- ``switchyard_edge_stream_tokens_total{model,direction}``: its increase is the sum of the
  ``x-tokens-in`` / ``x-tokens-out`` trailers the streams' callers saw; a stream naming a
  model the route table lacks counts under ``unknown``, never under its name.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import tritonclient.grpc as tc

from services.backends.repository import set_control
from services.edge.tokens import llm_request
from tests.llm_harness import PROMPT, run_stream
from tests.mesh_harness import (
    INFER_PATH,
    Mesh,
    eventually,
    raw_infer,
    request_bytes,
    summarize_input,
)
from tests.metrics_harness import (
    STREAM,
    Edge,
    Series,
    delta,
    edge_fixtures,
    pick,
    ready,
    served,
    stopped,
    stream,
    unary,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WEST = "west-cheap"  # the only backend in r-west: calls restricted there wait on it
ONLY_WEST = (("x-allowed-regions", "r-west"),)
HELD_TOKENS = 200  # an LLM stream this long cannot end before its backend parks it


cfg, edge = edge_fixtures("inflight_tokens")


def inflight(series: Series) -> tuple[float, float]:
    """The gauge as (unary, stream)."""
    return (pick(series, "switchyard_edge_inflight", kind="unary"),
            pick(series, "switchyard_edge_inflight", kind="stream"))


def statuses(d: Series) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for (name, labels), v in d.items():
        if name == "switchyard_edge_calls_total" and v:
            out[dict(labels)["status"]] += int(v)
    return out


async def ended_at_zero(edge: Edge, before: Series, counted: dict[str, int]) -> None:
    """Once the edge counted the calls (``counted``: status → calls), the gauge reads 0."""
    await eventually(lambda: statuses(delta(edge.series(), before)) == counted, 20,
                     f"the calls counted as {counted}")
    try:
        await eventually(lambda: inflight(edge.series()) == (0, 0), 10,
                         "nothing in flight once every call ended")
    except AssertionError as err:
        raise AssertionError(f"{err}: (unary, stream) reads {inflight(edge.series())}"
                             ) from None


def parked(endpoint: str) -> bool:
    """Whether the backend's summarize model now parks its calls (a direct call waits)."""
    with tc.InferenceServerClient(endpoint) as c:
        try:
            c.infer("summarize-small", [summarize_input()], client_timeout=0.5)
        except tc.InferenceServerException:
            return True
    return False


async def held_stream(ch: grpc.aio.Channel, timeout: float) -> tuple[Any, asyncio.Task[str]]:
    """An LLM stream restricted to r-west, read in a task that returns its status name."""
    async def requests() -> AsyncIterator[bytes]:
        yield llm_request("generate", PROMPT, HELD_TOKENS)

    call: Any = ch.stream_stream(STREAM)(requests(), metadata=ONLY_WEST,  # type: ignore[arg-type]
                                         timeout=timeout)

    async def read() -> str:
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as err:
            return str(err.code().name)
        except asyncio.CancelledError:  # grpc's word for a call this caller cancelled
            return "CANCELLED"
        return str((await call.code()).name)

    return call, asyncio.create_task(read())


async def test_inflight_returns_to_zero_after_calls_that_end_at_once(edge: Edge) -> None:
    """Answered, refused and failed calls; streams answered, ended by the edge (a second
    request naming another model) and cancelled by the caller after their first response
    (the edge drains the upstream): each one in flight while the edge serves it, none after."""
    await ready(edge)
    assert inflight(edge.series()) == (0, 0)
    before = edge.series()
    async with grpc.aio.insecure_channel(edge.address) as ch:
        for _ in range(3):
            assert (await asyncio.to_thread(served, edge.address, [])).status == "OK"
        seen = [await unary(ch, raw=request_bytes("no-such-model"), model="unknown"),
                await unary(ch, [("x-slo-ms", "fast")]),
                await unary(ch, [("x-max-cost-usd", "0")])]
        seen += [await stream(ch), await stream(ch, second=request_bytes("summarize")),
                 await stream(ch, cancel_after=1), await stream(ch, cancel_after=2)]
    assert [s.status for s in seen] == ["NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION",
                                        "OK", "INVALID_ARGUMENT", "CANCELLED", "CANCELLED"]
    await ended_at_zero(edge, before, {"OK": 4, "NOT_FOUND": 1, "INVALID_ARGUMENT": 2,
                                       "FAILED_PRECONDITION": 1, "CANCELLED": 2})


async def test_inflight_reads_the_calls_held_and_zero_after_cancels_and_deadlines(
        mesh: Mesh, edge: Edge) -> None:
    """Calls and streams held in a parked Triton (the demo model's ``hang`` knob): the gauge
    reads each kind held; down by exactly the calls that end as their callers cancel them,
    then by those that run out of deadline, to 0."""
    await ready(edge)
    west = mesh.tritons[WEST]
    before = edge.series()
    set_control(west.repository, hang=True)
    try:
        # the model notices the knob within ~200 ms: the direct probe that waits is parked
        # there too, and every call after it queues behind it in Triton
        await eventually(lambda: asyncio.to_thread(parked, west.endpoint), 20,
                         "the backend parks its calls", poll_s=0.1)
        async with grpc.aio.insecure_channel(edge.address) as ch:
            infer: Any = ch.unary_unary(INFER_PATH)
            to_cancel = [infer(request_bytes(), metadata=ONLY_WEST, timeout=60)
                         for _ in range(2)]
            streams_to_cancel = [await held_stream(ch, 60) for _ in range(2)]
            await eventually(lambda: inflight(edge.series()) == (2, 2), 20,
                             "2 calls and 2 streams held")
            running_out = [asyncio.create_task(raw_infer(ch, ONLY_WEST, timeout=6))
                           for _ in range(3)]
            streams_running_out = [await held_stream(ch, 6) for _ in range(2)]
            await eventually(lambda: inflight(edge.series()) == (5, 4), 5,
                             "5 calls and 4 streams held")
            for call in to_cancel:
                call.cancel()
            await eventually(lambda: inflight(edge.series()) == (3, 4), 10,
                             "the cancelled calls no longer in flight")
            for call, _ in streams_to_cancel:
                call.cancel()
            await eventually(lambda: inflight(edge.series()) == (3, 2), 10,
                             "the cancelled streams no longer in flight")
            assert [await t for _, t in streams_to_cancel] == ["CANCELLED"] * 2
            ran_out = [(await t)[0].name for t in running_out]
            ran_out += [await t for _, t in streams_running_out]
    finally:
        set_control(west.repository, hang=False)
    assert ran_out == ["DEADLINE_EXCEEDED"] * 5, ran_out
    await ended_at_zero(edge, before, {"CANCELLED": 4, "DEADLINE_EXCEEDED": 5})


async def test_stream_tokens_are_the_trailers_callers_saw(edge: Edge) -> None:
    """Demo-LLM streams of different prompts and lengths, a stream that is not an LLM's (its
    responses are its tokens out) and a stream naming a model the route table lacks: the
    counter moved by the summed trailers, under the model label the edge bounds."""
    await ready(edge)
    before = edge.series()
    runs = [(PROMPT[:n], m) for n, m in ((60, 12), (20, 5), (7, 1), (45, 30))]
    llm = await asyncio.gather(*(asyncio.to_thread(run_stream, edge.address, p, m,
                                                   [("x-slo-ms", "5000")]) for p, m in runs))
    assert [s.code for s in llm] == [grpc.StatusCode.OK] * len(runs), [s.details for s in llm]
    assert [len(s.tokens) for s in llm] == [m for _, m in runs]
    async with grpc.aio.insecure_channel(edge.address) as ch:
        plain = await stream(ch)  # 4 responses, x-tokens-out 4
        code, trailers, _ = await _stream_to(ch, "made-up-\u202emodel")
    assert code == "NOT_FOUND" and trailers["x-tokens-in"] == "0", (code, trailers)
    tokens_in = sum(int(s.trailers["x-tokens-in"]) for s in llm)
    tokens_out = sum(int(s.trailers["x-tokens-out"]) for s in llm) + 4
    assert tokens_in == sum(len(p) for p, _ in runs) and plain.trailers["x-tokens-out"] == "4"

    def counted() -> tuple[float, float]:
        d = delta(edge.series(), before)
        return (pick(d, "switchyard_edge_stream_tokens_total", model="generate",
                     direction="in"),
                pick(d, "switchyard_edge_stream_tokens_total", model="generate",
                     direction="out"))

    await eventually(lambda: counted() == (tokens_in, tokens_out), 10,
                     f"{tokens_in} tokens in and {tokens_out} out counted")
    after = edge.series()
    names = {dict(labels)["model"] for (name, labels) in after
             if name == "switchyard_edge_stream_tokens_total"}
    assert names == {"generate", "unknown"}, names
    assert pick(delta(after, before), "switchyard_edge_stream_tokens_total",
                model="unknown") == 0


async def _stream_to(ch: grpc.aio.Channel, model: str) -> tuple[str, dict[str, str], str]:
    call: Any = ch.stream_stream(STREAM)(iter([request_bytes(model)]),  # type: ignore[arg-type]
                                         timeout=10)
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return err.code().name, {str(k): str(v) for k, v in err.trailing_metadata() or ()}, ""
    return "OK", {}, ""


async def test_inflight_returns_to_zero_after_a_stream_the_edge_gives_up(
        mesh: Mesh, edge: Edge) -> None:
    """Last (it stops a backend): a stream held on a stopped Triton (SIGSTOP), the only
    backend it may use, is given up by the edge once the health checks find the backend
    unreachable: in flight until then, 0 after."""
    await ready(edge)
    before = edge.series()
    async with grpc.aio.insecure_channel(edge.address) as ch:
        with stopped(mesh.tritons[WEST]):
            _, given_up = await held_stream(ch, 20)
            await eventually(lambda: inflight(edge.series()) == (0, 1), 10, "the stream held")
            status = await given_up
    assert status == "UNAVAILABLE", status
    assert pick(delta(edge.series(), before), "switchyard_edge_streams_given_up_total",
                backend=WEST) == 1
    await ended_at_zero(edge, before, {"UNAVAILABLE": 1})
