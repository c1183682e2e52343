"""``switchyard demo``: a mixed workload of tight and loose SLOs through the edges.

Each call is an ordinary ``tritonclient.grpc`` request; the demo sends it through
tritonclient's own gRPC stub with ``with_call`` so it can read Switchyard's trailers
(``x-served-by``, ``x-cost-usd``, ``x-slo-met``). The same workload runs twice on the same
mesh: routed by Switchyard (cheapest deployment that meets the SLO) and with
``x-routing-profile: fastest`` (always the lowest-latency deployment), and both are printed
per deployment and in total, a deployment's calls priced alike in both (``priced_alike``).
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import _utils as tc_utils

from services.config import MeshConfig
from services.render import cheaper_by, table

TIGHT_SLO_MS, LOOSE_SLO_MS = 40.0, 400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    edge: str
    slo_ms: float
    deployment: str
    latency_ms: float
    cost_usd: float
    ok: bool
    status: str = "OK"


def infer_with_trailers(client: tc.InferenceServerClient, model: str,
                        inputs: Sequence[tc.InferInput], metadata: Sequence[tuple[str, str | bytes]],
                        timeout_s: float) -> tuple[tc.InferResult, dict[str, str]]:
    """One tritonclient request; returns its result and the edge's trailing metadata."""
    request = tc_utils._get_inference_request(
        model_name=model, inputs=inputs, model_version="", request_id="", outputs=None,
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
        parameters=None)
    try:
        response, call = client._client_stub.ModelInfer.with_call(
            request=request, metadata=tuple(metadata), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise tc_utils.get_error_grpc(exc) from None  # tritonclient's own exception type
    trailers = dict(call.trailing_metadata() or ())
    return tc.InferResult(response), trailers


def _one(address: str, edge: str, slo_ms: float, profile: str, dim: int) -> Outcome:
    client = _clients(address)
    x = tc.InferInput("INPUT0", [1, dim], "FP32")
    x.set_data_from_numpy(np.random.default_rng().standard_normal((1, dim)).astype(np.float32))
    md = [("x-slo-ms", str(slo_ms))] + ([("x-routing-profile", profile)] if profile else [])
    t0 = time.perf_counter()
    try:
        _, tr = infer_with_trailers(client, "summarize", [x], md, timeout_s=5.0)
    except Exception as exc:
        return Outcome(edge, slo_ms, "-", (time.perf_counter() - t0) * 1000, 0.0, False,
                       type(exc).__name__)
    ms = (time.perf_counter() - t0) * 1000
    return Outcome(edge, slo_ms, tr.get("x-served-by", "?"), ms,
                   float(tr.get("x-cost-usd", "0")), True)


_CLIENTS: dict[str, tc.InferenceServerClient] = {}


def _clients(address: str) -> tc.InferenceServerClient:
    if address not in _CLIENTS:
        _CLIENTS[address] = tc.InferenceServerClient(address)
    return _CLIENTS[address]


def run_workload(cfg: MeshConfig, calls: int, profile: str, seed: int = 7,
                 concurrency: int = 4) -> list[Outcome]:
    rng = random.Random(seed)
    dim = next(m.input_dim for m in cfg.models if m.name == "summarize")
    plan = [(rng.choice(cfg.edges), TIGHT_SLO_MS if rng.random() < 0.5 else LOOSE_SLO_MS)
            for _ in range(calls)]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda p: _one(f"{p[0].host}:{p[0].port}", p[0].id, p[1], profile,
                                            dim), plan))


def summarize(outcomes: list[Outcome]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[(f"{o.slo_ms:.0f} ms", o.deployment)].append(o)
    rows = [_row(k[0], k[1], v) for k, v in sorted(groups.items())]
    rows.append(_row("all", "TOTAL", outcomes))
    return rows


def met(os_: list[Outcome]) -> float:
    """The percentage of ``os_`` served within their SLO."""
    return 100 * sum(1 for o in os_ if o.ok and o.latency_ms <= o.slo_ms) / max(len(os_), 1)


def _row(slo: str, deployment: str, os_: list[Outcome]) -> list[str]:
    lat = sorted(o.latency_ms for o in os_ if o.ok)
    cost = sum(o.cost_usd for o in os_ if o.ok)

    def q(p: float) -> str:
        return f"{lat[min(len(lat) - 1, int(p * (len(lat) - 1)))]:.1f}" if lat else "-"
    return [slo, deployment, str(len(os_)), str(sum(1 for o in os_ if not o.ok)), q(0.5),
            q(0.95), f"{met(os_):.1f}%", f"{1000 * cost / max(len(os_), 1):.6f}"]


HEADERS = ["SLO", "deployment", "calls", "failed", "p50 ms", "p95 ms", "SLO met",
           "$ per 1k calls"]


PRICED_ALIKE = ("a deployment's calls priced alike in both runs, at the mean of its "
                "x-cost-usd over both")


def priced_alike(runs: dict[str, list[Outcome]]) -> dict[str, list[Outcome]]:
    """``runs`` with every served call on a deployment priced at that deployment's mean
    ``x-cost-usd`` over all runs. The trailer is the deployment's price times the compute
    time per call placement has learned at that moment, and on this CPU-emulated mesh that
    time moves with the host's load from one run to the next: at host load 10, the
    capacity mesh's use1-h100/summarize-large was priced 58 % dearer per call in the first
    run than in the second, and the comparison measured the host, not the routing. Priced
    alike, the runs differ only in where their calls went."""
    spent: dict[str, list[float]] = defaultdict(list)
    for out in runs.values():
        for o in out:
            if o.ok:
                spent[o.deployment].append(o.cost_usd)
    mean = {d: sum(v) / len(v) for d, v in spent.items()}
    return {name: [replace(o, cost_usd=mean[o.deployment]) if o.ok else o for o in out]
            for name, out in runs.items()}


def labels(cfg: MeshConfig) -> str:
    """What the routing tables' numbers are, from ``cfg``: whose prices, and what of their
    latency is emulated (it said examples/prices.toml and EMULATED inter-region RTT on every
    mesh, examples/mesh-capacity.toml's too, which emulates no RTT)."""
    prices = os.path.relpath(cfg.path(cfg.prices_file))
    rtt = ("EMULATED inter-region RTT" if cfg.wan.emulate else
           "no inter-region RTT: [wan] emulate = false")
    return (f"prices: list prices from {prices}; latency: real Triton calls, EMULATED "
            f"accelerator speed, {rtt}")


def run_demo(cfg: MeshConfig, calls: int = 400) -> dict[str, list[Outcome]]:
    if cfg.capacity.enabled:  # a live re-placement first, on demand it alone sets up
        from services.demo_plan import run_plan_demo

        run_plan_demo(cfg)
    print(f"\ndemo: {calls} calls per run, half with a {TIGHT_SLO_MS:.0f} ms SLO and half "
          f"with {LOOSE_SLO_MS:.0f} ms, spread over edges {[e.id for e in cfg.edges]}")
    print("warming up (lets agents report real Triton statistics)…", flush=True)
    run_workload(cfg, min(calls, 120), "", seed=1)
    time.sleep(2.5)
    took, raw = {}, {}
    for name, profile in (("Switchyard (cheapest that meets the SLO)", ""),
                          ("baseline: always the fastest deployment", "fastest")):
        t0 = time.perf_counter()
        raw[name] = run_workload(cfg, calls, profile)
        took[name] = time.perf_counter() - t0
    results = priced_alike(raw)
    for name, out in results.items():
        print(f"\n{name}  ({took[name]:.1f} s)")
        print(table(HEADERS, summarize(out)))
    sw, base = results.values()
    c_sw = sum(o.cost_usd for o in sw) / max(len(sw), 1)
    c_base = sum(o.cost_usd for o in base) / max(len(base), 1)
    if c_base > 0:
        print(f"\nSwitchyard cost per call is {cheaper_by(c_sw, c_base)} than always-fastest "
              f"on the same mesh, with {met(sw):.1f}% of its calls within their SLO against "
              f"{met(base):.1f}% ({labels(cfg)}; {PRICED_ALIKE})")
    from services.demo_streams import run_stream_demo

    run_stream_demo(cfg)  # LLM streams: TTFT/TPOT objectives, $ per 1M tokens
    return results
