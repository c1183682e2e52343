"""``switchyard explain --stream`` without gRPC: the per-deployment reasons
(placement/explain_stream.py) and the CLI flags (services/stream_explain.py)."""

from __future__ import annotations

import argparse
import asyncio
import pathlib

import pytest

from placement.errors import InvalidRequest
from placement.explain_stream import explain_stream
from placement.streams import StreamAsk, StreamChoice, TokenEstimate, choose_stream
from services import stream_explain
from services.api.switchyard.v1 import placement_pb2
from services.edge.hints import ParsedHints
from services.placement.main import build_service
from tests.mesh_harness import mesh_config
from tests.stream_cases import FAST, SLOW, cand

SLOW2 = TokenEstimate(1.0, 40.0, 8.0, 0.9 / 3600)  # as slow, 3x the price


def _reasons(choice: StreamChoice, ask: StreamAsk, **kw: str) -> dict[str, str]:
    ex = explain_stream(choice, ask, {"fast/llm": "fleet", "slow/llm": "edge",
                                      "dear/llm": "edge"}, **kw)
    return {v.option.candidate.backend_id: v.reason for v in ex.verdicts}


def test_each_deployment_says_why_and_the_chosen_one_is_marked() -> None:
    cands = [cand("fast"), cand("slow"), cand("dear"), cand("new")]
    est = {"fast/llm": FAST, "slow/llm": SLOW, "dear/llm": SLOW2}
    ask = StreamAsk(200, 50, ttft_ms=1000, tpot_ms=100)
    choice = choose_stream(cands[:3], est, {}, ask)
    why = _reasons(choice, ask)
    assert why["slow"].startswith("chosen: cheapest feasible")
    assert why["dear"] == "feasible, but 200% dearer than the cheapest feasible"
    assert "dearer" in why["fast"]
    tight = StreamAsk(200, 50, ttft_ms=1000, tpot_ms=20)
    choice = choose_stream(cands, est, {}, tight)
    why = _reasons(choice, tight)
    assert why["slow"] == "misses an objective: predicted TPOT 40.00 ms > 20 ms"
    assert why["new"].startswith("unmeasured") or why["new"].startswith("chosen")
    ex = explain_stream(choice, tight, {"fast/llm": "fleet"})
    by = {v.option.candidate.backend_id: v for v in ex.verdicts}
    assert by["fast"].learned_from == "fleet" and by["new"].learned_from == ""
    assert by["fast"].usd_per_1m_tokens == pytest.approx(
        by["fast"].option.cost_usd / 250 * 1e6)
    assert "of 4 deployments are predicted to meet the stream's objectives (TTFT ≤ 1000 ms, " \
        "TPOT ≤ 20 ms)" in ex.summary


def test_holder_load_bound_and_fastest_reasons() -> None:
    cands = [cand("a"), cand("b")]
    est = {"a/llm": SLOW, "b/llm": SLOW}
    ask = StreamAsk(3000, 10, ttft_ms=1000, session_key="s", holder="b/llm",
                    cached_tokens=2900)
    choice = choose_stream(cands, est, {}, ask)
    ex = explain_stream(choice, ask, {})
    by = {v.option.candidate.backend_id: v for v in ex.verdicts}
    assert by["b"].prefix_holder and not by["a"].prefix_holder
    assert by["b"].reason.startswith("chosen: the session's prefix holder")
    assert by["a"].reason == ("misses an objective: predicted TTFT 3001.0 ms > 500 ms (the "
                              "1000 ms objective less a 50% guard band for other edges' "
                              "prefills)")
    loaded = StreamAsk(100, 10)
    choice = choose_stream(cands, est, {"a/llm": 5}, loaded)
    assert _reasons(choice, loaded)["a"].startswith("at the load bound: 5 streams in flight")
    both = [cand("fast"), cand("slow")]
    choice = choose_stream(both, {"fast/llm": FAST, "slow/llm": SLOW}, {}, loaded)
    fastest = StreamChoice(next(o for o in choice.options if o.candidate.backend_id == "fast")
                           .candidate, True, "profile fastest", choice.options)
    why = _reasons(fastest, loaded, profile="fastest")
    assert why["slow"] == "slower: predicted TTFT + 10 × TPOT = 501 ms vs 61 ms"


def _args(**kw: object) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--region", default="")
    stream_explain.add_arguments(p)
    argv = ["generate", "--stream"] + [x for k, v in kw.items()
                                       for x in (f"--{k.replace('_', '-')}", str(v))]
    return p.parse_args(argv)


def test_cli_flags_become_the_request_and_bad_ones_name_the_flag() -> None:
    parsed = ParsedHints(None, 0.0, float("inf"), "", frozenset(), "r", None, "fastest")
    req = stream_explain.request(_args(ttft_ms=500, tpot_ms=6, max_tokens=64,
                                       session_id="conv", prompt_tokens=1000), parsed)
    a = req.stream
    assert (a.ttft_ms, a.tpot_ms, a.max_tokens, a.session_id, a.prompt_tokens) == (
        500, 6, 64, "conv", 1000)
    assert req.profile == "fastest" and not req.HasField("max_cost_usd")
    with pytest.raises(InvalidRequest, match=r"whole number.*\(flag --max-tokens\)"):
        stream_explain.request(_args(max_tokens="2.5"), parsed)
    with pytest.raises(InvalidRequest, match=r"\(flag --tpot-ms\)"):
        stream_explain.request(_args(tpot_ms=0), parsed)


def test_placement_refuses_a_stream_explain_and_names_the_edge(tmp_path: pathlib.Path) -> None:
    svc = build_service(mesh_config(tmp_path), preregister=True)
    request = placement_pb2.ExplainRequest(model="generate", edge_region="r-east",
                                           stream=placement_pb2.StreamAsk(prompt_tokens=10))
    with pytest.raises(InvalidRequest, match=r"EdgeAdmin\.Explain"):
        asyncio.run(svc.Explain(request, None))  # type: ignore[arg-type]
