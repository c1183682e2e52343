"""The demo's streaming section: real LLM streams through the mesh's first edge.

Each stream is a real ``ModelStreamInfer`` to the edge (the demo LLM's contract:
``services.edge.tokens.llm_request``) carrying ``x-ttft-ms``/``x-tpot-ms`` objectives; the
edge's token trailers say what happened (``x-served-by``, ``x-ttft-ms``, ``x-tpot-ms``,
``x-tokens-in``/``-out``, ``x-cost-usd`` from tokens, ``x-slo-met`` for both objectives).
Half the streams are interactive (24 tokens, a tight TPOT only a fast GPU meets), half are
batch jobs (64 tokens, loose objectives). The same streams run twice: routed by Switchyard
(cheapest deployment predicted to meet both objectives) and with ``x-routing-profile:
fastest`` (lowest predicted TTFT + max_tokens × TPOT, whatever it costs). The demo LLM's
token speed is EMULATED (``services.backends.demo_model``: sleeps scaled by each backend's
emulated accelerator speed) on this machine's CPU, so host contention makes every deployment's
TTFT and TPOT slip alike (a sleep that should end wakes late): ``load_note`` says so beside the
section, with the host's load average, and that the objectives are likely missed for that
reason when the load is above the core count. The prices are the list prices in the mesh's
price file. The section decides no exit code.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from services.config import MeshConfig
from services.edge.tokens import llm_request, parse_token
from services.render import cheaper_by, table

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
PROMPT_TOKENS = 200
# (class, x-ttft-ms, x-tpot-ms, output tokens): a chat turn needs a fast decoder; a batch job
# (a summary, an extraction) writes more and only needs a bound
CLASSES = (("interactive", 400.0, 3.5, 24), ("batch", 2000.0, 25.0, 64))
HEADERS = ["run", "class", "deployment", "streams", "failed", "TTFT p50 ms", "TPOT p50 ms",
           "tokens out", "$/1M tokens", "SLO met"]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    cls: str
    deployment: str
    ok: bool
    tokens: int
    tokens_in: int
    ttft_ms: float
    tpot_ms: float
    cost_usd: float
    slo_met: bool
    resumed: int
    status: str = "OK"


EMULATION = ("the demo LLM's token speed is EMULATED with sleeps on this machine's CPU (scaled "
             "by each backend's emulated accelerator speed): under host contention the emulated "
             "TTFT and TPOT slip for every deployment alike")


def host_load() -> tuple[float, int]:
    """The host's 1-minute load average and its core count."""
    return os.getloadavg()[0], os.cpu_count() or 1


def load_note(load_1m: float, cores: int) -> str:
    """The host's load, and what it means for the stream section's objectives: above the core
    count the emulated speeds slip for every deployment, so TTFT/TPOT objectives missed then
    say more about the host than about the routing."""
    note = f"host load average {load_1m:.2f} (1 min) on {cores} core{'s' * (cores != 1)}"
    if load_1m > cores:
        return (f"{note}: above the core count, so the emulated TTFT/TPOT run slow for every "
                "deployment and the stream objectives are likely missed for that reason, in "
                "both runs alike")
    return f"{note}: not above the core count"


def llm_model(cfg: MeshConfig) -> str | None:
    """The mesh's decoupled (LLM) model, if it has one."""
    return next((m.name for m in cfg.models if m.decoupled), None)


def one_stream(address: str, model: str, prompt: list[int], max_tokens: int, cls: str,
               metadata: Sequence[tuple[str, str]], timeout_s: float = 20.0) -> StreamOutcome:
    """One real stream through the edge; its outcome from the edge's trailers."""
    tokens = 0
    with grpc.insecure_channel(address) as ch:
        rpc: grpc.StreamStreamMultiCallable[bytes, bytes] = ch.stream_stream(
            STREAM, request_serializer=None, response_deserializer=None)
        call = rpc(iter([llm_request(model, prompt, max_tokens)]), metadata=tuple(metadata),
                   timeout=timeout_s)
        try:
            for resp in call:
                tokens += parse_token(resp) is not None
        except grpc.RpcError:
            pass
        code = call.code()
        tr = {k: v if isinstance(v, str) else v.decode()
              for k, v in call.trailing_metadata() or ()}
    if code is not grpc.StatusCode.OK:
        return StreamOutcome(cls, "-", False, tokens, len(prompt), 0.0, 0.0, 0.0, False, 0,
                             code.name)
    return StreamOutcome(cls, tr.get("x-served-by", "?"), True, int(tr.get("x-tokens-out", 0)),
                         int(tr.get("x-tokens-in", len(prompt))),
                         float(tr.get("x-ttft-ms", "nan")), float(tr.get("x-tpot-ms", "nan")),
                         float(tr.get("x-cost-usd", 0)), tr.get("x-slo-met") == "true",
                         int(tr.get("x-resumed", 0)))


def run_streams(address: str, model: str, n: int, profile: str, seed: int = 11,
                concurrency: int = 4) -> list[StreamOutcome]:
    """``n`` streams, the classes alternating; the same prompts for the same ``seed``."""
    rng = random.Random(seed)
    plan = [(CLASSES[i % len(CLASSES)], [rng.randrange(1, 30_000) for _ in range(PROMPT_TOKENS)])
            for i in range(n)]

    def go(item: tuple[tuple[str, float, float, int], list[int]]) -> StreamOutcome:
        (cls, ttft, tpot, max_tokens), prompt = item
        md = [("x-ttft-ms", f"{ttft:g}"), ("x-tpot-ms", f"{tpot:g}")]
        if profile:
            md.append(("x-routing-profile", profile))
        return one_stream(address, model, prompt, max_tokens, cls, md)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(go, plan))


def rows(run: str, outcomes: list[StreamOutcome]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[StreamOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.cls, o.deployment)].append(o)
    out = [_row(run, cls, dep, v) for (cls, dep), v in sorted(groups.items())]
    out.append(_row(run, "all", "TOTAL", outcomes))
    return out


def usd_per_1m_tokens(outcomes: Sequence[StreamOutcome]) -> float | None:
    """Cost of the served streams over their prompt + output tokens, per 1M."""
    served = [o for o in outcomes if o.ok]
    tokens = sum(o.tokens + o.tokens_in for o in served)
    return sum(o.cost_usd for o in served) / tokens * 1e6 if tokens else None


def _row(run: str, cls: str, dep: str, os_: list[StreamOutcome]) -> list[str]:
    ok = [o for o in os_ if o.ok]

    def p50(xs: list[float]) -> str:
        xs = [x for x in xs if not math.isnan(x)]  # a 1-token stream has no TPOT
        return f"{statistics.median(xs):.1f}" if xs else "-"
    cost = usd_per_1m_tokens(os_)
    return [run, cls, dep, str(len(os_)), str(len(os_) - len(ok)),
            p50([o.ttft_ms for o in ok]), p50([o.tpot_ms for o in ok]),
            str(sum(o.tokens for o in ok)), "-" if cost is None else f"{cost:.2f}",
            f"{100 * sum(o.slo_met for o in ok) / len(os_):.0f}%"]


def run_stream_demo(cfg: MeshConfig, streams: int = 16) -> dict[str, list[StreamOutcome]]:
    """The section: warm the edge's token learning, then Switchyard vs always-fastest."""
    model = llm_model(cfg)
    if model is None or not cfg.edges:
        print("\nstreams: the mesh has no decoupled (LLM) model; section skipped")
        return {}
    edge = cfg.edges[0]
    address = f"{edge.host}:{edge.port}"
    t_section = time.perf_counter()
    print(f"\nstreams: {streams} LLM streams per run of {model!r} through {edge.id}, "
          f"{PROMPT_TOKENS} prompt tokens each; "
          + "; ".join(f"{c}: {n} tokens out, TTFT ≤ {t:g} ms, TPOT ≤ {p:g} ms"
                      for c, t, p, n in CLASSES))
    print(f"{EMULATION}; {load_note(*host_load())}")
    print("warming up the edge's token learning…", flush=True)
    run_streams(address, model, 8, "", seed=3)  # each deployment is tried once, then known
    results: dict[str, list[StreamOutcome]] = {}
    out_rows: list[list[str]] = []
    for name, profile in (("Switchyard", ""), ("fastest", "fastest")):
        t0 = time.perf_counter()
        results[name] = outcomes = run_streams(address, model, streams, profile)
        out_rows += rows(f"{name} ({time.perf_counter() - t0:.1f} s)", outcomes)
    print(table(HEADERS, out_rows))
    print(f"(token speed EMULATED, sleeps on CPU; {load_note(*host_load())})")
    sw, base = (usd_per_1m_tokens(results[k]) for k in ("Switchyard", "fastest"))
    met = {k: sum(o.slo_met for o in v) for k, v in results.items()}
    if sw is not None and base:
        print(f"\nSwitchyard streams cost ${sw:.2f} per 1M tokens vs ${base:.2f} always-fastest "
              f"({cheaper_by(sw, base, 0)}); both objectives "
              f"met by {met['Switchyard']}/{streams} vs {met['fastest']}/{streams} streams "
              f"(token speed EMULATED, list prices; section took "
              f"{time.perf_counter() - t_section:.1f} s)")
    return results
