"""The demo LLM stops generating once its client has cancelled (Triton's
``response_sender.is_cancelled()``), and sends the final flag so Triton releases the request.

``demo_model.py`` only runs inside Triton's Python-backend stub; here it is loaded with a FAKE
``triton_python_backend_utils`` (just the names ``_Llm`` uses) and a fake response sender.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types
from typing import Any

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FINAL = 1  # the fake's TRITONSERVER_RESPONSE_COMPLETE_FINAL


@pytest.fixture(scope="module")
def demo() -> Any:
    """``services/backends/demo_model.py`` over a fake ``triton_python_backend_utils``."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL  # type: ignore[attr-defined]
    fake.Tensor = lambda name, value: (name, value)  # type: ignore[attr-defined]
    fake.InferenceResponse = lambda output_tensors: output_tensors  # type: ignore[attr-defined]
    saved = sys.modules.get(fake.__name__)
    sys.modules[fake.__name__] = fake
    try:
        spec = importlib.util.spec_from_file_location(
            "demo_model_under_test", ROOT / "services" / "backends" / "demo_model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules[fake.__name__]
        else:
            sys.modules[fake.__name__] = saved
    return module


class FakeSender:
    """Records what the model sends; cancelled by its client after ``cancel_after`` tokens."""

    def __init__(self, cancel_after: int | None) -> None:
        self.cancel_after = cancel_after
        self.tokens = 0
        self.finals = 0

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and self.tokens >= self.cancel_after

    def send(self, response: Any = None, flags: int = 0) -> None:
        if response is not None:
            self.tokens += 1
        if flags == FINAL:
            self.finals += 1


def llm(demo: Any, tmp_path: pathlib.Path) -> Any:
    config = {"parameters": {}}  # no emulated waits: the test is about what is sent
    return demo._Llm(config, 7, demo._Control(str(tmp_path / "_control.json")))


@pytest.mark.parametrize(("cancel_after", "tokens"), [(None, 50), (3, 3), (0, 0)])
def test_generation_stops_at_the_clients_cancel_and_still_ends_the_request(
        demo: Any, tmp_path: pathlib.Path, cancel_after: int | None, tokens: int) -> None:
    model = llm(demo, tmp_path)
    sender = FakeSender(cancel_after)
    model._run(sender, np.arange(20, dtype=np.int32), 50)
    assert (sender.tokens, sender.finals) == (tokens, 1)
    assert model.active == 0  # a cancelled stream no longer slows the batch
