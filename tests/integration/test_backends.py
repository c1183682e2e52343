"""Real tritonserver backends and the emulated WAN relay, driven with tritonclient.grpc."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import statistics
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from services.backends.repository import set_control
from services.backends.triton import TritonProcess
from services.backends.wan import RelayRoute, WanRelay
from tests.fixtures_backends import StartBackend, backend_mesh
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

INPUT_DIM = 16
TOKENS = 5

MESH = backend_mesh(
    models=[
        {
            "name": "summarize",
            "default_slo_ms": 300,
            "input_dim": INPUT_DIM,
            "variants": [
                {"name": "tiny", "quality": 0.5, "matmul_n": 32, "matmul_iters": 1},
                {"name": "heavy", "quality": 0.9, "matmul_n": 256, "matmul_iters": 40},
            ],
        },
        {
            "name": "generate",
            "default_slo_ms": 2000,
            "decoupled": True,
            "input_dim": INPUT_DIM,
            "variants": [
                {"name": "gen", "quality": 0.7, "matmul_n": 64, "matmul_iters": 10,
                 "tokens": TOKENS},
            ],
        },
    ],
    backends=[
        {"id": "cpu-a", "variants": ["tiny", "heavy", "gen"]},
        {"id": "cpu-b", "variants": ["tiny"]},
    ],
)


def _inputs(x: np.ndarray) -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def _is_final(item: tuple[Any, Any]) -> bool:
    result, error = item
    assert error is None, error
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


def _median_ms(client: grpcclient.InferenceServerClient, model: str, calls: int = 20) -> float:
    x = np.ones((1, INPUT_DIM), np.float32)
    client.infer(model, _inputs(x))  # warm-up
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.infer(model, _inputs(x))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


@pytest.fixture(scope="module")
def shared(triton_backend_module: StartBackend) -> TritonProcess:
    return triton_backend_module(MESH, "cpu-a")


@pytest.fixture
def client(shared: TritonProcess) -> Any:
    c = grpcclient.InferenceServerClient(shared.endpoint)
    yield c
    c.close()
    set_control(shared.repository, slow_factor=1.0, hang=False)


def test_outputs_are_deterministic_batched_and_depend_on_input(client: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, INPUT_DIM)).astype(np.float32)
    first = client.infer("tiny", _inputs(x)).as_numpy("OUTPUT0")
    again = client.infer("tiny", _inputs(x)).as_numpy("OUTPUT0")
    other = client.infer("tiny", _inputs(x + 1)).as_numpy("OUTPUT0")
    heavy = client.infer("heavy", _inputs(x)).as_numpy("OUTPUT0")

    assert first.shape == (3, INPUT_DIM)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, heavy)  # another variant is another model
    assert np.all(np.abs(first) < 1)
    # Rows are independent: a batch answers like its rows sent alone.
    np.testing.assert_allclose(client.infer("tiny", _inputs(x[1:2])).as_numpy("OUTPUT0"),
                               first[1:2], rtol=1e-5)


def test_same_variant_answers_identically_on_another_backend(
    client: Any, triton_backend_module: StartBackend
) -> None:
    other = triton_backend_module(MESH, "cpu-b")
    x = np.arange(2 * INPUT_DIM, dtype=np.float32).reshape(2, INPUT_DIM) / 10
    c2 = grpcclient.InferenceServerClient(other.endpoint)
    try:
        np.testing.assert_array_equal(
            client.infer("tiny", _inputs(x)).as_numpy("OUTPUT0"),
            c2.infer("tiny", _inputs(x)).as_numpy("OUTPUT0"),
        )
    finally:
        c2.close()


def test_metrics_and_endpoints_are_published(client: Any, shared: TritonProcess) -> None:
    client.infer("tiny", _inputs(np.ones((1, INPUT_DIM), np.float32)))
    assert shared.metrics_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(shared.metrics_url, timeout=5) as resp:  # noqa: S310 - test URL
        text = resp.read().decode()
    assert 'nv_inference_request_success{model="tiny",version="1"}' in text
    published = json.loads((shared.run_dir / "endpoints.json").read_text())
    assert published["endpoint"] == shared.endpoint
    assert published["metrics_url"] == shared.metrics_url
    assert published["pid"] == shared.pid


def test_heavier_variant_is_measurably_slower(client: Any) -> None:
    tiny, heavy = _median_ms(client, "tiny"), _median_ms(client, "heavy")
    assert heavy > 2 * tiny, (tiny, heavy)
    assert heavy - tiny > 2.0, (tiny, heavy)


def test_decoupled_model_streams_one_response_per_token(shared: TritonProcess) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c = grpcclient.InferenceServerClient(shared.endpoint)
    x = np.full((1, INPUT_DIM), 0.25, np.float32)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        # The empty final response marks the end: everything before it is a token.
        c.async_stream_infer("gen", _inputs(x), request_id="r1",
                             enable_empty_final_response=True)
        got = []
        while not _is_final(item := results.get(timeout=30)):
            got.append(item)
        assert len(got) == TOKENS, f"{len(got)} responses for {TOKENS} tokens"
    finally:
        c.stop_stream()
        c.close()
    assert [err for _, err in got] == [None] * TOKENS
    outputs = [res.as_numpy("OUTPUT0") for res, _ in got]
    assert all(o.shape == (1, INPUT_DIM) for o in outputs)
    assert {res.get_response().id for res, _ in got} == {"r1"}
    assert len({o.tobytes() for o in outputs}) == TOKENS  # each token is a new value


def test_slow_factor_slows_calls_without_restart(client: Any, shared: TritonProcess) -> None:
    pid = shared.pid
    base = _median_ms(client, "heavy", calls=10)
    set_control(shared.repository, slow_factor=4.0)
    eventually_sync(lambda: _median_ms(client, "heavy", calls=3) > 2 * base, 10,
                    "the model picks up slow_factor 4")
    slowed = _median_ms(client, "heavy", calls=10)
    set_control(shared.repository, slow_factor=1.0)
    eventually_sync(lambda: _median_ms(client, "heavy", calls=3) < slowed / 2, 10,
                    "the model picks up slow_factor 1")
    restored = _median_ms(client, "heavy", calls=10)

    assert slowed > 2 * base, (base, slowed)
    assert restored < slowed / 2, (slowed, restored)
    assert shared.pid == pid
    assert shared.alive


def test_hang_exceeds_client_timeout_then_recovers(client: Any, shared: TritonProcess) -> None:
    x = np.ones((1, INPUT_DIM), np.float32)
    set_control(shared.repository, hang=True)
    failed: list[tuple[str, float]] = []  # (status, seconds) of the first call that failed

    def fails() -> bool:  # until the model has read the knob, calls are answered
        t0 = time.perf_counter()
        try:
            client.infer("tiny", _inputs(x), client_timeout=0.5)
        except InferenceServerException as exc:
            failed.append((str(exc.status()), time.perf_counter() - t0))
            return True
        return False

    eventually_sync(fails, 10, "a hung model fails a call")
    status, seconds = failed[0]
    assert "DEADLINE_EXCEEDED" in status
    assert seconds < 3

    set_control(shared.repository, hang=False)
    out = client.infer("tiny", _inputs(x), client_timeout=10).as_numpy("OUTPUT0")
    assert out.shape == (1, INPUT_DIM)


def test_sigkill_leaves_no_server_and_clients_see_unavailable(
    triton_backend: StartBackend,
) -> None:
    proc = triton_backend(MESH, "cpu-b")
    c = grpcclient.InferenceServerClient(proc.endpoint)
    x = np.ones((1, INPUT_DIM), np.float32)
    assert c.infer("tiny", _inputs(x)).as_numpy("OUTPUT0").shape == (1, INPUT_DIM)

    pid = proc.pid
    proc.kill(signal.SIGKILL)
    eventually_sync(lambda: not proc.alive, 10, "the SIGKILLed tritonserver is reaped")
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    with pytest.raises(InferenceServerException) as info:
        c.infer("tiny", _inputs(x), client_timeout=5)
    assert "UNAVAILABLE" in str(info.value.status())
    c.close()
    proc.stop()
    # SIGKILL lands asynchronously; init reaps the orphans.
    eventually_sync(lambda: _session_members(pid) == [], 5, "Python stubs outlived their server")


def _session_members(sid: int) -> list[int]:
    """Pids whose session is ``sid`` (tritonserver leads its own; its stubs join it)."""
    members = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


async def _paired_added_ms(direct: str, relayed: str, pairs: int = 20) -> list[float]:
    """Per pair, a call through ``relayed`` minus one straight after to ``direct``: the two
    sides of a pair share the host's load at that moment, so load drift cancels out."""
    x = np.ones((1, INPUT_DIM), np.float32)
    inp = aioclient.InferInput("INPUT0", [1, INPUT_DIM], "FP32")
    inp.set_data_from_numpy(x)
    clients = [aioclient.InferenceServerClient(e) for e in (relayed, direct)]
    try:
        for c in clients:
            await c.infer("tiny", [inp])  # connect + warm-up
        added = []
        for _ in range(pairs):
            ms = []
            for c in clients:
                t0 = time.perf_counter()
                out = await c.infer("tiny", [inp])
                ms.append((time.perf_counter() - t0) * 1000)
                assert out.as_numpy("OUTPUT0").shape == (1, INPUT_DIM)
            added.append(ms[0] - ms[1])
        return added
    finally:
        for c in clients:
            await c.close()


ONE_WAY_MS = 20.0


async def test_grpc_through_relay_adds_twice_the_one_way_delay(shared: TritonProcess) -> None:
    """A unary call crosses the relay once each way: + 2 x one-way. Anything more (a chunk
    held behind another, an extra trip) costs at least one more one-way: the upper bound."""
    route = RelayRoute("r-west", "cpu-a", 0, shared.endpoint, one_way_ms=ONE_WAY_MS)
    async with WanRelay([route]) as relay:
        added = await _paired_added_ms(shared.endpoint, f"127.0.0.1:{relay.port_of(route)}")
    median = statistics.median(added)
    assert median >= 2 * ONE_WAY_MS - 1, added
    assert median < 3 * ONE_WAY_MS, added
