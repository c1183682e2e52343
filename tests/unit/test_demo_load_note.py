"""The demo's stream section says its LLM speeds are sleep-emulated on CPU, that host contention
slows every deployment alike, and the host's load average; above the core count, that the
stream objectives are likely missed for that reason (services/demo_streams.py). The old
section said neither the load nor what it does (these tests fail on it: no load_note)."""

from __future__ import annotations

import types
from typing import Any

import pytest

from services import demo_streams
from services.demo_streams import EMULATION, StreamOutcome, load_note


def test_the_emulation_is_said_with_what_contention_does() -> None:
    assert "EMULATED with sleeps" in EMULATION and "CPU" in EMULATION
    assert "slip for every deployment alike" in EMULATION


@pytest.mark.parametrize(("load", "cores", "missed"), [
    (0.4, 2, False), (2.0, 2, False), (2.01, 2, True), (11.5, 2, True), (7.9, 8, False),
    (1.5, 1, True),
])
def test_objectives_are_said_likely_missed_only_above_the_core_count(
        load: float, cores: int, missed: bool) -> None:
    note = load_note(load, cores)
    assert note.startswith(f"host load average {load:.2f} (1 min) on {cores} core")
    assert ("stream objectives are likely missed for that reason" in note) is missed
    assert ("not above the core count" in note) is not missed


def test_the_section_prints_the_note_beside_its_table(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def streams(address: str, model: str, n: int, profile: str, seed: int = 11,
                concurrency: int = 4) -> list[StreamOutcome]:
        return [StreamOutcome("interactive", "b/llm", True, 24, 200, 90.0, 9.0, 1e-5, False, 0)
                for _ in range(n)]

    monkeypatch.setattr(demo_streams, "run_streams", streams)
    monkeypatch.setattr(demo_streams, "host_load", lambda: (9.5, 2))
    cfg: Any = types.SimpleNamespace(
        models=[types.SimpleNamespace(name="generate", decoupled=True)],
        edges=[types.SimpleNamespace(id="edge-a", host="127.0.0.1", port=1)])
    demo_streams.run_stream_demo(cfg, streams=2)
    out = capsys.readouterr().out
    table_end = out.index("TOTAL")
    before, after = out[:table_end], out[table_end:]
    for part in (before, after):
        assert "host load average 9.50 (1 min) on 2 cores" in part
        assert "likely missed for that reason" in part
    assert EMULATION in before and "EMULATED, sleeps on CPU" in after
