"""CPU and Python calls per token of the edge's stream path: the real ``route_stream``,
``Generation``, ``Router`` and attempt policy over ``tests/llm_upstream_fake.py``'s fake
demo-LLM upstream (no sockets, no Triton), per scenario:

- ``plain``: a 100-token stream, no hints;
- ``tpot``: with ``x-tpot-ms 30`` (the ``MoveWatch`` runs at each token), on pace;
- ``move``: the same, its backend slows from 10 to 40 ms per token after 2: one move;
- ``resume``: its backend dies after 5 tokens: one resumption;
- ``variant``: ``move`` with ``x-allow-variant-change`` and the other deployment serving
  another variant, measured by the fleet, whose declaration the edge has not cached.

``--roots DIR...``: clean ``git archive``s to compare, each run in its own process, in
alternating order over ``--rounds``; the fake comes from this tree when a root lacks it.
CPU µs per token is the median over the rounds (``time.process_time``); calls per token
(cProfile, one extra run) is deterministic, so it shows what a change adds whatever the
host's load.

    python -m benchmarks.stream_path --roots /tmp/before /tmp/after --rounds 3 --streams 100
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import importlib.util
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

SCENARIOS = ("plain", "tpot", "move", "resume", "variant")
TOKENS = 100
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake(root: str) -> Any:
    path = os.path.join(root, "tests", "llm_upstream_fake.py")
    if not os.path.exists(path):
        path = os.path.join(HERE, "tests", "llm_upstream_fake.py")
    spec = importlib.util.spec_from_file_location("llm_upstream_fake", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def child(root: str, streams: int, calls: bool) -> dict[str, dict[str, float]]:
    sys.path.insert(0, root)
    from placement.token_learning import TokenSpeed
    from services.edge.router import CallRecord
    from services.edge.stream import route_stream
    from services.edge.tokens import llm_request
    from tests.unit.test_edge_hostile_limits import Context
    from tests.unit.test_edge_resilience import Clock, cand, make_router
    fake = _fake(root)

    async def one(req: bytes) -> Any:
        yield req

    def setup(scenario: str) -> tuple[Any, list[tuple[str, str]]]:
        clock = Clock()
        cands = [cand(0, 1e-6, 5), cand(1, 2e-6, 5)]
        if scenario == "variant":
            cands[1] = dataclasses.replace(cands[1], variant="m-w", deployment_id="b1/m-w",
                                           tokens=TokenSpeed(1.0 / 3, 10.0, 0.0))
        router, _, _ = make_router(cands, {}, clock)
        for d in ("b0/m-v", "b1/m-v"):
            for _ in range(3):
                router.streams.observe(d, prefill_ms=1.0, uncached_tokens=3, tpot_ms=10.0,
                                       load=0)
        router.streams.declare("m-v", True, TOKENS)
        ups = fake.FakeLlmUpstreams(clock)
        slow = scenario in ("move", "variant")
        ups.add("ep0", default_tokens=TOKENS, slow_after=2 if slow else None, slow_gap_s=0.04,
                fail_after=5 if scenario == "resume" else None)
        ups.add("ep1", default_tokens=TOKENS)
        router.upstreams = ups
        md = [("x-slo-ms", "100")]
        if scenario not in {"plain", "resume"}:
            md.append(("x-tpot-ms", "30"))
        if scenario == "variant":
            md.append(("x-allow-variant-change", "true"))
        return router, md

    async def run(scenario: str) -> dict[str, float]:
        ok = toks = moved = 0
        cpu = 0.0
        for _ in range(streams):
            router, md = setup(scenario)
            rec = CallRecord("", "")
            n = 0
            t0 = time.process_time()
            req = one(llm_request("m", [1, 2, 3], None))
            async for _r in route_stream(router, req, md, 30.0, rec, Context()):  # type: ignore[arg-type]
                n += 1
            cpu += time.process_time() - t0
            ok += rec.status == "OK" and n == TOKENS
            toks += n
            moved += dict(rec.stream).get("x-resumed", "0") != "0"
        return {"whole": ok, "moved": moved, "us_per_token": cpu / max(toks, 1) * 1e6}

    out = {}
    for sc in SCENARIOS:
        if calls:
            pr = cProfile.Profile()
            pr.enable()
            asyncio.run(run(sc))
            pr.disable()
            out[sc] = {"calls_per_token": pstats.Stats(pr).total_calls  # type: ignore[attr-defined]
                       / (streams * TOKENS)}
        else:
            out[sc] = asyncio.run(run(sc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roots", nargs="+", default=[HERE])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--calls", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.streams, a.calls)))
        return

    def spawn(root: str, calls: bool) -> dict[str, dict[str, float]]:
        cmd = [sys.executable, "-m", "benchmarks.stream_path", "--child", root,
               "--streams", str(a.streams)] + (["--calls"] if calls else [])
        res = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        got: dict[str, dict[str, float]] = json.loads(res.stdout.strip().splitlines()[-1])
        return got

    runs: dict[str, list[dict[str, dict[str, float]]]] = {r: [] for r in a.roots}
    for i in range(a.rounds):
        for root in (a.roots if i % 2 == 0 else list(reversed(a.roots))):
            runs[root].append(spawn(root, False))
    calls = {r: spawn(r, True) for r in a.roots}
    names = [os.path.basename(r.rstrip("/")) for r in a.roots]
    print(f"| scenario | {' | '.join(f'{n}: whole / moved' for n in names)} | "
          f"{' | '.join(f'{n}: CPU µs/token' for n in names)} | "
          f"{' | '.join(f'{n}: calls/token' for n in names)} |")
    print("| :--- |" + " ---: |" * (3 * len(names)))
    for sc in SCENARIOS:
        wm = [f"{runs[r][0][sc]['whole']:.0f} / {runs[r][0][sc]['moved']:.0f}" for r in a.roots]
        cpu = [statistics.median(x[sc]["us_per_token"] for x in runs[r]) for r in a.roots]
        cl = [calls[r][sc]["calls_per_token"] for r in a.roots]
        print(f"| {sc} | {' | '.join(wm)} | {' | '.join(f'{c:.1f}' for c in cpu)} | "
              f"{' | '.join(f'{c:.1f}' for c in cl)} |")
    print(f"\n{a.rounds} rounds of {a.streams} streams × {TOKENS} tokens per scenario and root")


if __name__ == "__main__":
    main()
