"""The demo model every Switchyard backend hosts: a Triton Python-backend model, real numpy work.

This file is copied verbatim to ``<repository>/<variant>/1/model.py`` by
:mod:`services.backends.repository` and only ever runs inside Triton's Python-backend stub
(``triton_python_backend_utils`` exists nowhere else), so it imports nothing from Switchyard.

Per request it runs ``iterations`` products of an ``n``x``n`` float32 matrix (real CPU work
standing in for a GPU forward pass; ``iterations`` already has the backend's emulated
accelerator ``speed`` divided out), then answers ``OUTPUT0 = tanh(INPUT0 @ W)`` with a weight
``W`` seeded from the variant name, so the same variant gives the same answer on any backend.
A decoupled variant streams ``tokens`` responses per request, each after its slice of the work,
then the final flag: the LLM token-streaming shape clients consume with ``ModelStreamInfer``.

A decoupled variant is also a demo LLM when a request carries ``PROMPT`` (INT32 token ids,
``[1, n]``) or ``TEXT`` (one BYTES string, tokenised trivially: a token per UTF-8 byte) and
optionally ``MAX_TOKENS`` (INT32 ``[1, 1]``; default ``tokens``): it answers one
``TOKEN`` (INT32 ``[1, 1]``) per response, then the final flag. Its speed is EMULATED (this
machine has no GPU): prefill waits ``llm_prefill_base_ms + uncached prompt tokens ×
llm_prefill_ms_per_token``, each further token waits ``llm_decode_ms_per_token × (1 +
llm_batch_slowdown × (streams in flight − 1))`` (both already divided by the backend's emulated
accelerator speed, times the drill's ``slow_factor``). Each generation runs on its own thread,
so concurrent streams form the batch that slows decoding. An emulated prefix cache (LRU of
``llm_prefix_cache_blocks`` hashes of ``llm_block_tokens``-token prompt prefixes) makes a
prompt whose prefix this instance served recently prefill faster. Tokens are real and
deterministic: token ``i`` is a CRC-32 of the variant's seed and the whole context so far, so
a generation resumed elsewhere with the prompt plus the tokens already delivered continues
with exactly the tokens the first backend would have sent (``switchyard_resumable``).

Drills steer a running server through ``<repository>/_control.json``
(``{"slow_factor": 1.0, "hang": false}``), re-read at most every 200 ms when its identity
changes: ``slow_factor`` multiplies the work, ``hang`` parks requests (bounded) until cleared.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from numpy.typing import NDArray

CONTROL_FILE = "_control.json"
CONTROL_RECHECK_S = 0.2
HANG_LIMIT_S = 600.0
HANG_POLL_S = 0.05


class _Control:
    """The drill knobs, cached; the file is stat-ed at most every ``CONTROL_RECHECK_S``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.slow_factor = 1.0
        self.hang = False
        self._checked = float("-inf")
        self._identity: tuple[int, int, int] | None = None

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < CONTROL_RECHECK_S:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.slow_factor, self.hang, self._identity = 1.0, False, None
            return
        identity = (st.st_mtime_ns, st.st_ino, st.st_size)
        if identity == self._identity:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            slow_factor = float(data.get("slow_factor", 1.0))
            hang = bool(data.get("hang", False))
        except (OSError, ValueError, TypeError, AttributeError):
            return  # unreadable or half-written: keep the last good knobs, retry next time
        self.slow_factor, self.hang, self._identity = max(slow_factor, 0.0), hang, identity

    def wait_while_hung(self) -> None:
        deadline = time.monotonic() + HANG_LIMIT_S
        while self.hang and time.monotonic() < deadline:
            time.sleep(HANG_POLL_S)
            self._checked = float("-inf")
            self.refresh()


def _param(config: dict[str, Any], key: str, default: str | None = None) -> str:
    params = config.get("parameters", {})
    if key not in params and default is not None:
        return default
    return str(params[key]["string_value"])


class _PrefixCache:
    """Emulated KV prefix cache: an LRU of hashes of whole ``block``-token prompt prefixes."""

    def __init__(self, capacity: int, block: int) -> None:
        self.capacity, self.block = capacity, block
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def _hashes(self, prompt: NDArray[np.int32]) -> list[int]:
        out, h = [], 0
        for i in range(len(prompt) // self.block):
            h = zlib.crc32(prompt[i * self.block:(i + 1) * self.block].tobytes(), h)
            out.append(h)
        return out

    def cached_tokens(self, prompt: NDArray[np.int32]) -> int:
        """Tokens of ``prompt`` covered by cached prefix blocks; caches all its blocks."""
        hashes = self._hashes(prompt)
        with self._lock:
            hit = 0
            for h in hashes:
                if h not in self._lru:
                    break
                hit += 1
            for h in hashes:
                self._lru[h] = None
                self._lru.move_to_end(h)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)
        return hit * self.block


class _Llm:
    """The emulated LLM of a decoupled variant (see the module docstring)."""

    def __init__(self, config: dict[str, Any], seed: int, control: _Control) -> None:
        self.prefill_base_ms = float(_param(config, "llm_prefill_base_ms", "0"))
        self.prefill_ms = float(_param(config, "llm_prefill_ms_per_token", "0"))
        self.decode_ms = float(_param(config, "llm_decode_ms_per_token", "0"))
        self.slowdown = float(_param(config, "llm_batch_slowdown", "0"))
        self.vocab = int(_param(config, "llm_vocab", "32000"))
        self.cache = _PrefixCache(int(_param(config, "llm_prefix_cache_blocks", "256")),
                                  int(_param(config, "llm_block_tokens", "16")))
        self.seed = seed
        self.control = control
        self.active = 0
        self._lock = threading.Lock()
        self.threads: set[threading.Thread] = set()

    def start(self, sender: Any, prompt: NDArray[np.int32], max_tokens: int) -> None:
        t = threading.Thread(target=self._run, args=(sender, prompt, max_tokens), daemon=True)
        with self._lock:
            self.threads.add(t)
        t.start()

    def _wait(self, ms: float, sender: Any) -> bool:
        """Wait ``ms`` of EMULATED accelerator time; False if the client cancelled the
        request (Triton's ``is_cancelled``, asked at the start of the wait: the time the
        ask takes is part of the wait, so the emulated speed is unchanged)."""
        t0 = time.monotonic()
        if sender.is_cancelled():
            return False
        asked_s = time.monotonic() - t0
        self.control.refresh()
        self.control.wait_while_hung()
        if ms > 0:
            time.sleep(max(0.0, ms * self.control.slow_factor / 1000.0 - asked_s))
        return True

    def _run(self, sender: Any, prompt: NDArray[np.int32], max_tokens: int) -> None:
        """Generate; stop at the next token once the client has cancelled, as a real LLM
        server frees the slot (the stream no longer counts in the batch slowdown)."""
        with self._lock:
            self.active += 1
        try:
            uncached = len(prompt) - self.cache.cached_tokens(prompt)
            if not self._wait(self.prefill_base_ms + uncached * self.prefill_ms, sender):
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            h = zlib.crc32(prompt.tobytes(), self.seed & 0xFFFFFFFF)
            for i in range(max_tokens):
                if i and not self._wait(
                        self.decode_ms * (1.0 + self.slowdown * (self.active - 1)), sender):
                    break
                token = np.array([[h % self.vocab]], dtype=np.int32)
                h = zlib.crc32(token.tobytes(), h)
                sender.send(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("TOKEN", token)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self._lock:
                self.active -= 1
                self.threads.discard(threading.current_thread())


def _prompt(request: Any) -> NDArray[np.int32] | None:
    """``PROMPT`` token ids, else ``TEXT`` tokenised trivially (one token per UTF-8 byte)."""
    prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT")
    if prompt is not None:
        ids: NDArray[np.int32] = prompt.as_numpy().astype(np.int32).reshape(-1)
        return ids
    text = pb_utils.get_input_tensor_by_name(request, "TEXT")
    if text is None:
        return None
    raw = text.as_numpy().reshape(-1)[0]
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)


class TritonPythonModel:
    """Triton's entry point for the Python backend (name and methods are Triton's contract)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        n = int(_param(config, "matmul_n"))
        seed = int(_param(config, "seed"))
        input_dim = int(_param(config, "input_dim"))
        self.iterations = int(_param(config, "iterations"))
        self.tokens = max(1, int(_param(config, "tokens")))
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        rng = np.random.default_rng(seed)
        # Orthogonal so repeated products neither overflow nor sink into slow denormals.
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        self.step = q.astype(np.float32)
        self.state = np.eye(n, dtype=np.float32)
        self.weight = (rng.standard_normal((input_dim, input_dim)) / np.sqrt(input_dim)).astype(
            np.float32
        )
        repo = os.path.dirname(os.path.abspath(args["model_repository"]))
        self.control = _Control(os.path.join(repo, CONTROL_FILE))
        self.llm = _Llm(config, seed, self.control) if self.decoupled else None

    def _work(self, iterations: int) -> None:
        m = self.state
        for _ in range(iterations):
            m = m @ self.step
        self.state = m

    def _iterations(self) -> int:
        self.control.refresh()
        self.control.wait_while_hung()
        return max(1, round(self.iterations * self.control.slow_factor))

    def _answer(self, request: Any, token: int) -> Any:
        x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy().astype(np.float32)
        y = np.tanh(x @ self.weight + np.float32(token))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", y)])

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if not self.decoupled:
            responses = []
            for request in requests:
                self._work(self._iterations())
                responses.append(self._answer(request, 0))
            return responses
        for request in requests:
            sender = request.get_response_sender()
            prompt = _prompt(request)
            if prompt is not None:
                self._generate(request, sender, prompt)
                continue
            if pb_utils.get_input_tensor_by_name(request, "INPUT0") is None:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "a request needs INPUT0 or PROMPT")),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            total = self._iterations()
            base, extra = divmod(total, self.tokens)
            for token in range(self.tokens):
                self._work(base + (1 if token < extra else 0))
                sender.send(self._answer(request, token))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _generate(self, request: Any, sender: Any, tokens: NDArray[np.int32]) -> None:
        assert self.llm is not None
        limit = pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS")
        max_tokens = self.tokens if limit is None else int(limit.as_numpy().reshape(-1)[0])
        if max_tokens < 1:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"MAX_TOKENS must be >= 1, got {max_tokens}")),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        self.llm.start(sender, tokens, max_tokens)

    def finalize(self) -> None:
        if self.llm is not None:
            for t in list(self.llm.threads):
                t.join(timeout=5)
        self.state = np.eye(1, dtype=np.float32)
