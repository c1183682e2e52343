"""The token workload (benchmarks/costsim/tokens_workload.py): lengths follow the Azure LLM
inference trace 2023's distribution, sessions share prefixes in the stated fraction, and the
scenario file is validated."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from benchmarks.costsim.tokens_workload import (
    AZURE_2023,
    QUANTILES,
    TRACE_STATS,
    draw_lengths,
    generate_streams,
    load_token_scenario,
    parse_token_scenario,
)
from placement.errors import ConfigError

SCENARIOS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "tokens"


@pytest.mark.parametrize("trace", ["conv", "code"])
def test_lengths_follow_the_traces_moments(trace: str) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    prompt, output = draw_lengths(trace, rng.random(n), rng.random(n))
    for sample, (mean, median, p90) in zip((prompt, output), TRACE_STATS[trace], strict=True):
        assert np.median(sample) == pytest.approx(median, rel=0.03)
        assert np.percentile(sample, 90) == pytest.approx(p90, rel=0.04)
        assert sample.mean() == pytest.approx(mean, rel=0.08)
    # the two traces differ the way the paper's workloads do: code prompts are longer and
    # its outputs far shorter than conversation's
    assert len(QUANTILES) == len(AZURE_2023[trace][0]) == len(AZURE_2023[trace][1])


def test_code_and_conversation_differ_in_shape() -> None:
    u = np.linspace(0.01, 0.99, 999)
    conv_p, conv_o = draw_lengths("conv", u, u)
    code_p, code_o = draw_lengths("code", u, u)
    assert np.median(code_p) > np.median(conv_p)
    assert np.median(code_o) * 5 < np.median(conv_o)


def test_an_unknown_trace_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trace 'azure'"):
        draw_lengths("azure", np.zeros(1), np.zeros(1))


@pytest.mark.parametrize("name", ["chat", "code"])
def test_streams_share_prefixes_in_the_stated_fraction(name: str) -> None:
    s = load_token_scenario(SCENARIOS / f"{name}.toml")
    st = generate_streams(s, quick=True)
    rate = sum(r.load_rps for r in s.regions.values())
    assert len(st) == pytest.approx(rate * s.quick_duration_s, rel=0.08)
    assert (st.session >= 0).mean() == pytest.approx(s.shared_fraction, abs=0.03)
    assert np.all(st.shared <= st.prompt)
    assert np.all(st.shared[st.session < 0] == 0)
    assert np.all(np.diff(st.t_ms) >= 0)
    # sessions repeat (Zipf): the most popular session carries many streams
    counts = np.bincount(st.session[st.session >= 0])
    assert counts.max() >= 10


def test_the_same_seed_gives_the_same_streams() -> None:
    s = load_token_scenario(SCENARIOS / "chat.toml")
    a, b = generate_streams(s, quick=True), generate_streams(s, quick=True)
    assert np.array_equal(a.prompt, b.prompt) and np.array_equal(a.session, b.session)


def test_prices_come_from_the_price_file() -> None:
    s = load_token_scenario(SCENARIOS / "chat.toml")
    l4_spot = next(d for d in s.deployments if d.id.startswith("aws-us-east-1.l4.spot"))
    assert l4_spot.usd_per_hour == pytest.approx(0.349)
    assert "skypilot" in l4_spot.price_source


def test_a_pool_without_a_listed_price_is_refused() -> None:
    raw = {"regions": [{"name": "aws-us-east-1", "cloud": "aws", "load_rps": 1}],
           "accelerators": {"nvidia-h100-80gb": {"prefill_ms_per_token": 0.1, "decode_ms": 5,
                                                 "max_batch": 8, "cache_tokens": 100}},
           "variants": [{"name": "v"}],
           "classes": [{"name": "c", "share": 1, "ttft_ms": 100, "tpot_ms": 10}],
           "pools": [{"region": "aws-us-east-1", "accelerator": "nvidia-h100-80gb",
                      "price_class": "spot", "variant": "v"}]}
    base = SCENARIOS
    with pytest.raises(ConfigError, match="no price for nvidia-h100-80gb spot"):
        parse_token_scenario(raw, base, "inline")
    raw["pools"][0]["variant"] = "w"
    with pytest.raises(ConfigError, match="variant 'w' is not in variants"):
        parse_token_scenario(raw, base, "inline")
