"""Where a token run's money and misses are, per SLO class and pool (issue 14's diagnosis).

    python -m benchmarks.tokens_diag [--scenario tokens-slowdown] [--scale 1] [--quick]
        [--policies switchyard lowest-latency] [--seed-offset 0]
    python -m benchmarks.tokens_diag --write
        (the section "Tokens: where the money and the misses are" of RESULTS.md, after the
        Tokens section: tokens-slowdown at ×1, full horizon, and ×2, quick, and which target
        each load case of switchyard misses, quick; switchyard-list-cost beside switchyard)

For each policy on one scenario (simulated servers, ``benchmarks/costsim/tokensim.py``):
per SLO class its streams, attainment, $ per 1M output tokens and share of the run's $,
against the offline LP bound's (``benchmarks/costsim/tokens_bound.py``) $ per 1M for the
same class, and what the policy's own choices would have cost had every batch been full (its
prefill as served, its decode at the pool's full-batch share): the part of the gap to the
bound that is how full the batches ran, against the part that is which pool; per class and
pool where the $ went; and for Switchyard policies, of each class's misses how many were
chosen with nothing predicted feasible (a best effort) and how many were predicted feasible
and missed anyway. Printed, or with ``--write`` put into RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from benchmarks.common import BENCH_DIR, Section, md_table
from benchmarks.cost import write_section
from benchmarks.costsim import tokens_bound, tokens_report
from benchmarks.costsim.tokens_names import POLICIES, REJECTED, VARIANTS, make_policy
from benchmarks.costsim.tokens_workload import (
    Streams,
    TokenScenario,
    generate_streams,
    load_token_scenario,
)
from benchmarks.costsim.tokensim import Outcome, Policy, TokenSim
from benchmarks.tokens_spend import HEADS as SPEND_HEADS
from benchmarks.tokens_spend import class_lines, spend_rows, window_lines

SCENARIOS = pathlib.Path(BENCH_DIR, "scenarios", "tokens")


@dataclasses.dataclass
class Verdicts:
    """Per stream: 1 when the policy's choice was a best effort (nothing predicted to meet
    both objectives), 0 when predicted feasible, -1 unknown (a baseline)."""

    best_effort: np.ndarray


def _run(s: TokenScenario, streams: Streams, name: str) -> tuple[Outcome, Verdicts]:
    sim = TokenSim(s, streams)
    policy = make_policy(name, sim, s.seed)
    marks = np.full(len(streams), -1)
    if hasattr(policy, "infeasible"):
        inner = policy.choose

        def choose(sid: int, edge: int, now: float, sim_: TokenSim) -> int:
            before = policy.infeasible  # type: ignore[attr-defined]
            d = inner(sid, edge, now, sim_)
            marks[sid] = int(policy.infeasible > before)  # type: ignore[attr-defined]
            return d

        policy.choose = choose  # type: ignore[method-assign]
    wrapped: Policy = policy
    return sim.run(wrapped), Verdicts(marks)


def class_rows(s: TokenScenario, st: Streams, out: Outcome, v: Verdicts,
               bound: tokens_bound.Bound, name: str) -> list[list[object]]:
    """One row per SLO class (counted streams only)."""
    m = st.t_ms >= s.warmup_s * 1000.0
    ttft_goal = np.array([c.ttft_ms for c in s.classes])[st.klass]
    tpot_goal = np.array([c.tpot_ms for c in s.classes])[st.klass]
    ttft_ok = out.ttft_ms <= ttft_goal
    tpot_ok = np.where(np.isnan(out.tpot_ms), st.output <= 1, out.tpot_ms <= tpot_goal)
    ok = ttft_ok & tpot_ok
    total = float(out.cost_usd[m].sum())
    rows: list[list[object]] = []
    for c, cls in enumerate(s.classes):
        k = m & (st.klass == c)
        tokens = int(st.output[k].sum())
        usd = float(out.cost_usd[k].sum())
        missed = k & ~ok
        b_usd, b_tok = bound.by_class.get(cls.name, (0.0, 0))
        full = sum(full_batch_usd(s, st, out, int(i)) for i in np.nonzero(k)[0])
        rows.append([name, cls.name, f"{int(k.sum()):,}", f"{ok[k].mean():.2%}",
                     f"{usd / tokens * 1e6:.3f}", f"{full / tokens * 1e6:.3f}",
                     f"{usd / total:.0%}",
                     f"{b_usd / b_tok * 1e6:.3f}" if b_tok else "–",
                     f"{int((missed & ~ttft_ok).sum())}", f"{int((missed & ~tpot_ok).sum())}",
                     f"{int((missed & (v.best_effort == 1)).sum())}"
                     if (v.best_effort >= 0).any() else "–",
                     f"{int((missed & (v.best_effort == 0)).sum())}"
                     if (v.best_effort >= 0).any() else "–",
                     f"{int((k & (v.best_effort == 1)).sum())}"
                     if (v.best_effort >= 0).any() else "–"])
    return rows


def full_batch_usd(s: TokenScenario, st: Streams, out: Outcome, i: int) -> float:
    """Stream ``i`` billed where the policy sent it (its first deployment, listed speed),
    its prefill as served (cache hit included) and its decode at that server's full-batch
    share: what the same choices would cost if every batch were full."""
    d = s.deployments[int(out.deployment[i])]
    noise = float(st.noise[i])
    prefill = d.prefill_ms(int(st.prompt[i]) - int(out.cache_hit[i])) * noise
    n = d.accelerator.max_batch
    decode = max(int(st.output[i]) - 1, 0) * noise * d.tpot_ms(n) / n
    return d.usd_per_hour / 3.6e6 * (prefill + decode)


def pool_rows(s: TokenScenario, st: Streams, out: Outcome, name: str,
              top: int = 6) -> list[list[object]]:
    """Per class and pool, the ``top`` dearest: streams, $ share of the run, $/1M, mean
    prompt tokens, mean batch the choosing edge counted, misses."""
    m = st.t_ms >= s.warmup_s * 1000.0
    ttft_goal = np.array([c.ttft_ms for c in s.classes])[st.klass]
    tpot_goal = np.array([c.tpot_ms for c in s.classes])[st.klass]
    ok = (out.ttft_ms <= ttft_goal) & np.where(np.isnan(out.tpot_ms), st.output <= 1,
                                               out.tpot_ms <= tpot_goal)
    total = float(out.cost_usd[m].sum())
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0, 0, 0])
    for i in np.nonzero(m)[0]:
        key = (s.classes[int(st.klass[i])].name,
               tokens_bound.pool_of(s.deployments[int(out.deployment[i])]))
        a = acc[key]
        a[0] += 1
        a[1] += float(out.cost_usd[i])
        a[2] += int(st.output[i])
        a[3] += int(st.prompt[i])
        a[4] += int(not ok[i])
    order = sorted(acc.items(), key=lambda kv: -kv[1][1])[:top]
    return [[name, c, p, f"{int(a[0]):,}", f"{a[1] / total:.0%}", f"{a[1] / a[2] * 1e6:.3f}",
             f"{a[3] / a[0]:,.0f}", f"{int(a[4])}"] for (c, p), a in order]


CLASS_HEADS = ["policy", "class", "streams", "both", "$/1M out",
               "same choices, full batches $/1M", "share of $", "LP bound $/1M",
               "TTFT misses", "TPOT misses", "misses, best effort",
               "misses, predicted feasible", "best efforts"]
POOL_HEADS = ["policy", "class", "pool", "streams", "share of $", "$/1M out", "mean prompt",
              "misses"]
TITLE = "Tokens: where the money and the misses are (issue 14, simulated)"
AFTER = "Tokens: LLM streams, Switchyard vs the LLM routers (simulated)"


def diagnose(s: TokenScenario, quick: bool, policies: Sequence[str], label: str = ""
             ) -> tuple[str, list[list[object]], list[list[object]], list[str],
                        list[list[object]]]:
    """One scenario's class and pool rows for ``policies``, per class of the first
    policy how its gap to the LP bound splits between pool choice and batch fill, and where
    each policy's $ goes by kind of stream (``benchmarks.tokens_spend``)."""
    streams = generate_streams(s, quick)
    bound = tokens_bound.lower_bound(s, streams, TokenSim(s, streams).rtt)
    classes: list[list[object]] = []
    pools: list[list[object]] = []
    spend: list[list[object]] = []
    for name in policies:
        out, v = _run(s, streams, name)
        classes += class_rows(s, streams, out, v, bound, name)
        pools += pool_rows(s, streams, out, name)
        spend += spend_rows(s, streams, out, v.best_effort, name)
    head = (f"{s.name}{label} ({'quick' if quick else 'full'} horizon): LP bound "
            f"${bound.usd_per_1m_out:.3f}/1M")
    mine = [p for p in policies if p.startswith("switchyard")]
    lines = [line for p in mine
             for line in (gap_lines(f"{s.name}{label}", classes, p)
                          + miss_lines(f"{s.name}{label}", classes, p)
                          + class_lines(f"{s.name}{label}", classes, p)
                          + window_lines(f"{s.name}{label}", spend, p))]
    return head, classes, pools, lines, spend


def gap_lines(scenario: str, classes: Sequence[Sequence[object]], policy: str) -> list[str]:
    """Per class of ``policy``: its $/1M, the same choices at full batches and the bound,
    and the share of the gap to the bound that full batches would close (from the rows)."""
    out = []
    for r in classes:
        if r[0] != policy or r[7] == "–":
            continue
        usd, full, bound = float(str(r[4])), float(str(r[5])), float(str(r[7]))
        gap = usd - bound
        share = (usd - full) / gap if gap > 0 else float("nan")
        out.append(f"{scenario}, {policy}, class {r[1]}: ${usd:.3f}/1M; the same choices at "
                   f"full batches ${full:.3f}; the LP bound ${bound:.3f}: full batches would "
                   f"close {share:.0%} of the gap to the bound, the choice of pool the other "
                   f"{1 - share:.0%}.")
    return out


def miss_lines(scenario: str, classes: Sequence[Sequence[object]], policy: str) -> list[str]:
    """``policy``'s misses over every class: how many were TTFT misses and how many were
    chosen as predicted feasible (from the rows; none without the policy's verdicts)."""
    mine = [r for r in classes if r[0] == policy and r[10] != "–"]
    if not mine:
        return []
    ttft = sum(int(str(r[8])) for r in mine)
    feasible = sum(int(str(r[11])) for r in mine)
    best = sum(int(str(r[10])) for r in mine)
    total = feasible + best
    if not total:
        return [f"{scenario}, {policy}: no stream missed."]
    return [f"{scenario}, {policy}: {total} streams missed an objective, {ttft} of them "
            f"their TTFT; {feasible} of the {total} "
            f"({feasible / total:.0%}) were chosen as predicted to meet both, {best} as a best "
            "effort (nothing predicted to)."]


def load_targets(scales: Sequence[float] = (0.5, 1.5, 2.0)) -> str:
    """Which target switchyard misses in each load case (quick horizon), from its rows."""
    from benchmarks.tokens import run_scenario, scaled

    rows = []
    for s in map(load_token_scenario, sorted(SCENARIOS.glob("*.toml"))):
        for scale in scales:
            r = {x.policy: x for x in run_scenario(
                scaled(s, scale), True, ("switchyard", "lowest-latency", "prefix-affinity"))}
            rows.append((scale, r))
    return tokens_report.load_summary(rows)


def section() -> Section:
    t0 = time.monotonic()
    s = _scenario("tokens-slowdown")
    from benchmarks.tokens import LIST_COST, scaled

    policies = ("switchyard", LIST_COST, "lowest-latency")
    parts = [diagnose(s, False, policies),
             diagnose(scaled(s, 2.0), True, policies, " ×2"),
             diagnose(_scenario("tokens-reclaim"), False, ("switchyard", "lowest-latency"))]
    intro = ("**Simulated** (`benchmarks/costsim/tokensim.py`, emulated servers). Per SLO "
             "class: `same choices, full batches` bills each stream where the policy sent it "
             "(its first deployment), its prefill as served and its decode at that pool's "
             "full-batch share (the LP bound's decode rule); `LP bound` is the class's part of "
             "the bound's assignment (`benchmarks/costsim/tokens_bound.py`); `best efforts`: "
             "streams for which nothing was predicted to meet both objectives. tokens-slowdown "
             "×2 is every region's rate × 2, quick horizon; tokens-reclaim (held out, "
             "written before any change it judged) full horizon. Where the $ goes by kind of "
             "stream: `benchmarks/tokens_spend.py`. `switchyard-list-cost`: the same "
             "choice with each deployment's decode priced as if the stream ran alone "
             "(`choose_stream(share_batch=False)`, measured, not the default).")
    notes: list[str] = []
    tables = []
    for head, classes, pools, gaps, spend in parts:
        tables += [f"#### {head}", md_table(CLASS_HEADS, classes),
                   md_table(POOL_HEADS, pools), md_table(SPEND_HEADS, spend), *gaps]
    notes += tables
    notes.append("Which target `switchyard` misses at other loads (quick horizon, "
                 "python -m benchmarks.tokens' load cases): " + load_targets())
    return Section(title=TITLE, command="python -m benchmarks.tokens_diag --write", table=intro,
                   notes=notes, elapsed_s=time.monotonic() - t0)


def _scenario(name: str) -> TokenScenario:
    return next(x for x in map(load_token_scenario, sorted(SCENARIOS.glob("*.toml")))
                if x.name == name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="tokens-slowdown")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--policies", nargs="+", default=["switchyard", "lowest-latency"],
                    choices=POLICIES + VARIANTS + REJECTED)
    ap.add_argument("--write", action="store_true",
                    help="write the diagnosis section into RESULTS.md (other flags ignored)")
    args = ap.parse_args()
    if args.write:
        sec = section()
        print(sec.markdown())
        write_section(sec, pathlib.Path(BENCH_DIR, "RESULTS.md"), after=AFTER)
        return
    from benchmarks.tokens import scaled  # the benchmark's own scaling

    s = _scenario(args.scenario)
    s = dataclasses.replace(scaled(s, args.scale), seed=s.seed + args.seed_offset)
    head, classes, pools, gaps, spend = diagnose(s, args.quick, args.policies)
    print(f"×{args.scale:g} seed +{args.seed_offset}: {head}")
    print(md_table(CLASS_HEADS, classes))
    print(md_table(POOL_HEADS, pools))
    print(md_table(SPEND_HEADS, spend))
    print("\n".join(gaps))


if __name__ == "__main__":
    main()
