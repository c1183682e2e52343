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

Drills steer a running server through ``<repository>/_control.json``
(``{"slow_factor": 1.0, "hang": false}``), re-read at most every 200 ms when its identity
changes: ``slow_factor`` multiplies the work, ``hang`` parks requests (bounded) until cleared.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

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


def _param(config: dict[str, Any], key: str) -> str:
    return str(config["parameters"][key]["string_value"])


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
            total = self._iterations()
            base, extra = divmod(total, self.tokens)
            for token in range(self.tokens):
                self._work(base + (1 if token < extra else 0))
                sender.send(self._answer(request, token))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def finalize(self) -> None:
        self.state = np.eye(1, dtype=np.float32)
