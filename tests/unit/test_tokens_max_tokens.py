"""A simulated stream stops at its class's ``max_tokens`` (issue 14, fifth round): a model
server stops a generation at the request's ``max_tokens``, and the edge
(``services/edge/generation.py``) and ``placement.streams`` read it as a hard upper bound.
Before, the simulator took the trace's length whatever the cap, and 31 % of tokens-slowdown's
streams ran past it."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from benchmarks.costsim.tokens_workload import generate_streams, load_token_scenario

SCENARIOS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "tokens"


@pytest.mark.parametrize("name", ["chat", "code", "rag", "reclaim", "slowdown"])
def test_no_simulated_stream_outputs_more_than_its_max_tokens(name: str) -> None:
    s = load_token_scenario(SCENARIOS / f"{name}.toml")
    for seed in (s.seed, s.seed + 1000):
        st = generate_streams(dataclasses.replace(s, seed=seed), quick=True)
        cap = np.array([c.max_tokens for c in s.classes])[st.klass]
        assert np.all(st.output >= 1)
        assert np.all(st.output <= cap), (
            f"{int((st.output > cap).sum())} of {len(st)} streams past their max_tokens")


def test_the_cap_clips_the_traces_length_and_leaves_shorter_streams_as_drawn() -> None:
    s = load_token_scenario(SCENARIOS / "slowdown.toml")
    free = dataclasses.replace(s, classes=tuple(dataclasses.replace(c, max_tokens=10**9)
                                                for c in s.classes))
    capped, uncapped = generate_streams(s, quick=True), generate_streams(free, quick=True)
    cap = np.array([c.max_tokens for c in s.classes])[capped.klass]
    # the same draws (arrivals, classes, prompts, sessions, noise): only the output differs
    assert np.array_equal(capped.t_ms, uncapped.t_ms)
    assert np.array_equal(capped.klass, uncapped.klass)
    assert np.array_equal(capped.prompt, uncapped.prompt)
    assert np.array_equal(capped.output, np.minimum(uncapped.output, cap))
    # the cap binds here (the conv trace has a mode just above 384): streams that would have
    # run longer end exactly at it, not redrawn shorter
    past = uncapped.output > cap
    assert past.mean() > 0.2
    assert np.all(capped.output[past] == cap[past])
