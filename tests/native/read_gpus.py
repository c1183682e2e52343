"""Drive the real ``NvmlReader`` (real pynvml) from stdin, one JSON answer per line on stdout.

Run by tests with the fake ``libnvidia-ml.so.1`` on ``LD_LIBRARY_PATH``. Commands:
``start`` → ``{"count": N}`` or ``{"error": ...}``; ``read`` → ``{"gpus": [GpuReading as
JSON, ...]}``; ``calls`` → the pynvml function names that reached the library.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pynvml
from google.protobuf.json_format import MessageToDict

from services import logs
from services.agent.nvml import NvmlReader, NvmlUnavailable


class _Recording:
    """The real pynvml module, recording which of its functions the reader called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if name.startswith("nvml") and callable(value):
            def call(*args: Any) -> Any:
                self.calls.append(name)
                return value(*args)
            return call
        return value


def main() -> None:
    logs.configure("warning")  # JSON on stderr: stdout carries the answers
    module = _Recording()
    reader = NvmlReader(module)
    for line in sys.stdin:
        command = line.strip()
        if command == "start":
            try:
                answer: dict[str, Any] = {"count": reader.start()}
            except NvmlUnavailable as exc:
                answer = {"error": exc.message, "cause": type(exc.__cause__).__name__}
        elif command == "read":
            answer = {"gpus": [MessageToDict(r, preserving_proto_field_name=True)
                               for r in reader.read_all()]}
        elif command == "calls":
            answer = {"calls": sorted(set(module.calls))}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
