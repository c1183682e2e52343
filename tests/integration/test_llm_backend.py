"""The demo LLM on a real Triton: tokens, emulated prefill/decode speed, batch, prefix cache,
and the resumption contract (prompt + delivered tokens continues the same generation)."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from services.backends.repository import BATCH_SLOWDOWN
from services.backends.triton import TritonProcess
from services.edge.tokens import llm_request, parse_token
from tests.fixtures_backends import StartBackend, backend_mesh
from tests.llm_harness import cold_prefill_ms, emulated_ms

pytestmark = pytest.mark.integration

# matmul_iters 20 at speed 1: decode 40 ms/token, prefill 1 ms per uncached prompt token.
MESH = backend_mesh(
    models=[{"name": "chat", "default_slo_ms": 5000, "decoupled": True, "variants": [
        {"name": "chat-small", "quality": 0.7, "matmul_n": 32, "matmul_iters": 20,
         "tokens": 6}]}],
    backends=[{"id": "llm-a", "variants": ["chat-small"]}],
)


@pytest.fixture(scope="module")
def backend(triton_backend_module: StartBackend) -> TritonProcess:
    return triton_backend_module(MESH, "llm-a")


STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def generate(endpoint: str, prompt: list[int] | str, max_tokens: int | None
             ) -> tuple[list[int], list[float]]:
    """Tokens and their arrival times (s after the request was sent), straight from Triton."""
    with grpc.insecure_channel(endpoint) as ch:
        t0 = time.perf_counter()
        tokens, times = [], []
        call = ch.stream_stream(STREAM)(iter([llm_request("chat-small", prompt, max_tokens)]),
                                        timeout=30)
        # Read to the end (the empty final response too) rather than leave mid-stream: a
        # stream cancelled before its final response is one this test has no reason to make
        # (a tritonserver here died of SIGSEGV, twice, in a run that did).
        for resp in call:
            tok = parse_token(resp)
            if tok is None:  # the empty final response; an error shows in the count below
                continue
            tokens.append(tok)
            times.append(time.perf_counter() - t0)
        assert max_tokens is None or len(tokens) == max_tokens, (len(tokens), max_tokens)
        return tokens, times


def tpot(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1)


def test_streams_max_tokens_deterministic_tokens(backend: TritonProcess) -> None:
    a, _ = generate(backend.endpoint, [5, 6, 7], 12)
    b, _ = generate(backend.endpoint, [5, 6, 7], 12)
    other, _ = generate(backend.endpoint, [5, 6, 8], 12)
    assert len(a) == 12 and a == b and a != other


def test_text_is_tokenised_as_one_token_per_utf8_byte(backend: TritonProcess) -> None:
    text = "résumé, please"
    by_text, _ = generate(backend.endpoint, text, 8)
    by_ids, _ = generate(backend.endpoint, list(text.encode()), 8)
    assert len(by_text) == 8 and by_text == by_ids


def test_default_max_tokens_is_the_variants_tokens(backend: TritonProcess) -> None:
    with grpc.insecure_channel(backend.endpoint) as ch:
        call = ch.stream_stream(STREAM)(iter([llm_request("chat-small", [1, 2], None)]),
                                        timeout=5)
        got = []
        for resp in call:
            got.append(parse_token(resp))
            if len(got) == 6:
                break
        call.cancel()
    assert len(got) == 6 and None not in got


def test_prompt_plus_delivered_tokens_continues_the_same_generation(
        backend: TritonProcess) -> None:
    prompt = list(range(40))
    whole, _ = generate(backend.endpoint, prompt, 15)
    head, _ = generate(backend.endpoint, prompt, 6)
    tail, _ = generate(backend.endpoint, prompt + head, 9)
    assert head + tail == whole


def test_prefill_grows_with_uncached_prompt_and_the_prefix_cache_cuts_it(
        backend: TritonProcess) -> None:
    long_prompt = [7000 + i for i in range(800)]  # ~800 ms of emulated prefill, cold
    _, cold = generate(backend.endpoint, long_prompt, 2)
    _, short = generate(backend.endpoint, [1, 2, 3], 2)
    # Same 800-token prefix, a new tail: only the tail is prefilled.
    _, warm = generate(backend.endpoint, [*long_prompt, 1, 2, 3, 4], 2)
    # The emulated prefill is a sleep: a load lengthens it, never shortens it. So the cold
    # prompt took at least its cold prefill, and a first token sooner than the long prompt's
    # cold prefill shows a prefill that grows with the prompt (short) or a cache hit (warm).
    ms = emulated_ms(MESH, "llm-a/chat-small")
    assert cold[0] * 1000 >= cold_prefill_ms(ms, len(long_prompt)), cold
    assert short[0] * 1000 < cold_prefill_ms(ms, len(long_prompt)), (short, cold)
    assert warm[0] * 1000 < cold_prefill_ms(ms, len(long_prompt) + 4), (warm, cold)


def test_decode_slows_with_the_batch(backend: TritonProcess) -> None:
    # A load only lengthens a sleep: the least of three lone streams is the closest to the
    # emulated TPOT (one stream's figure swung 40 -> 68 ms on a host at load 8).
    alone = min(tpot(generate(backend.endpoint, [11, 12 + k], 12)[1]) for k in range(3))
    results: dict[int, list[float]] = {}

    def one(i: int) -> None:
        results[i] = generate(backend.endpoint, [100 + i], 12)[1]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batched = sorted(tpot(t) for t in results.values())[2]  # the median stream
    # The emulated decode is a sleep: a loaded host lengthens each token by its scheduling
    # delay, never shortens one. So a lone stream takes at least the emulated TPOT (40 ms),
    # and the batch's slowdown (5 streams: 1 + 0.15 × 4 = 1.6×) shows over the lone stream:
    # at least half of it for the median stream.
    decode_s = emulated_ms(MESH, "llm-a/chat-small")["llm_decode_ms_per_token"] / 1000
    assert alone >= 0.9 * decode_s, alone
    assert batched - alone > 0.5 * decode_s * BATCH_SLOWDOWN * 4, (batched, alone)


def test_config_declares_emulated_speed_and_resumption(backend: TritonProcess) -> None:
    with grpc.insecure_channel(backend.endpoint) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        cfg: Any = stub.ModelConfig(service_pb2.ModelConfigRequest(name="chat-small"),
                                    timeout=5).config
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["llm_speed"] == "emulated"
    assert params["switchyard_resumable"] == "true"
    assert float(params["llm_decode_ms_per_token"]) == pytest.approx(40.0)
