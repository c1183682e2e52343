"""Tokens: LLM streams routed by Switchyard vs the LLM routers' rules, in the simulator.

    python -m benchmarks.tokens [--quick]
    python -m benchmarks.tokens --quick --only switchyard-fleet-load --scale 2 [--seed-offset N]
        (one policy, every scenario, printed only: how the rejected variants were measured;
        a seed offset draws other streams, to tell a change from seed noise)

Two workloads of different shape (``benchmarks/scenarios/tokens/``: chat-like and code-like,
lengths from the Azure LLM inference trace 2023) over a fleet of emulated LLM servers
(``benchmarks/costsim/tokensim.py``); every policy routes the same streams. Prints the
table and writes its section into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

from benchmarks.common import BENCH_DIR, Section, command_for, progress
from benchmarks.cost import write_section
from benchmarks.costsim import tokens_bound, tokens_report
from benchmarks.costsim.tokens_names import (
    ORACLES,
    POLICIES,
    REJECTED,
    VARIANTS,
    make_policy,
)
from benchmarks.costsim.tokens_policies import MOVE_CHECK_MS, PUSH_DELAY_MS, REPORT_EVERY_MS
from benchmarks.costsim.tokens_workload import (
    TRACE_SOURCE,
    TokenScenario,
    generate_streams,
    load_token_scenario,
)
from benchmarks.costsim.tokensim import TokenSim
from placement.stream_guard import GUARD_MAX_AGE_S, GUARD_QUANTILE, GUARD_WINDOW
from placement.stream_move import MAX_MOVES, MOVE_CONFIRM, MOVE_MARGIN, MOVE_WINDOW
from placement.streams import (
    FALLBACK_BAND,
    GUARDED_HEADROOM,
    TTFT_HEADROOM,
    UNMEASURED_PROBES,
)

ESTIMATE_S = (35, 60)
SCENARIOS = pathlib.Path(BENCH_DIR, "scenarios", "tokens")
RESULTS = pathlib.Path(BENCH_DIR, "RESULTS.md")
LOAD_SCALES = (0.5, 1.5, 2.0)
LEARNED = "switchyard-learned-margin"
FLEET = "switchyard-fleet"
FLEET_INSTANT = "switchyard-fleet-instant"
NO_MOVE = "switchyard-no-move"  # the default before moves (issue 14)
FASTEST_FALLBACK = "switchyard-fastest-fallback"  # the best effort before FALLBACK_BAND
ONE_PROBE = "switchyard-one-probe"  # UNMEASURED_PROBES (measured, not the default)
LIST_COST = "switchyard-list-cost"  # choose_stream(share_batch=False), issue 14 (measured)
LOAD_OTHERS = (ONE_PROBE, LIST_COST, FASTEST_FALLBACK, NO_MOVE, LEARNED, FLEET)  # load table
SPEND_SCENARIO = "tokens-slowdown"  # where the money goes, per pool
SPEND_POLICIES = ("switchyard", "lowest-latency")
# written after the others; no parameter of placement/streams.py was chosen on them
HELD_OUT = {"tokens-rag": "long prompts, short outputs, one hot shared prefix, a region far "
                          "from the cheap GPUs",
            "tokens-slowdown": "the cheap GPUs slow down mid-run, unannounced",
            "tokens-reclaim": "issue 14, written before any change it judged: a region's "
                              "cheap spot pool reclaimed mid-run (10× slower), half the load "
                              "there, a tight-TPOT class"}
TITLE = "Tokens: LLM streams, Switchyard vs the LLM routers (simulated)"


def run_scenario(s: TokenScenario, quick: bool,
                 policies: tuple[str, ...] = POLICIES + VARIANTS,
                 spent: dict[str, list[tokens_bound.PoolSpend]] | None = None
                 ) -> list[tokens_report.TokenResult]:
    """Every policy on ``s``'s streams; ``spent``, when given, gets the per-pool spend of
    ``SPEND_POLICIES``."""
    streams = generate_streams(s, quick)
    progress(f"tokens: {s.name}: {len(streams):,} streams, {len(s.deployments)} deployments")
    out = []
    for name in policies:
        sim = TokenSim(s, streams)
        outcome = sim.run(make_policy(name, sim, s.seed))
        if spent is not None and name in SPEND_POLICIES:
            spent[name] = tokens_bound.spend(s, streams, outcome)
        result = tokens_report.measure(s, streams, outcome, name)
        progress(f"tokens: {s.name}: {name}: {result.both:.2%} within both, "
                 f"${result.usd_per_1m_out:.3f}/1M output tokens")
        out.append(result)
    return out


def scaled(s: TokenScenario, scale: float) -> TokenScenario:
    """``s`` with every region's rate × ``scale``."""
    regions = {k: dataclasses.replace(r, load_rps=r.load_rps * scale)
               for k, r in s.regions.items()}
    return dataclasses.replace(s, regions=regions)


def load_sensitivity(scenarios: list[TokenScenario]
                     ) -> list[tuple[float, dict[str, tokens_report.TokenResult]]]:
    """Switchyard (and the variants beside it), lowest-latency and prefix-affinity with
    every region's rate scaled."""
    rows = []
    for s in scenarios:
        for scale in LOAD_SCALES:
            rows.append((scale, {r.policy: r for r in run_scenario(
                scaled(s, scale), True,
                ("switchyard", *LOAD_OTHERS, "lowest-latency", "prefix-affinity"))}))
    return rows


SEED_OFFSETS = (0, 1000)  # the seed check: each scenario's streams drawn twice


def seed_check(scenarios: list[TokenScenario], before: str, after: str
               ) -> list[tokens_report.SeedRow]:
    """``before`` and ``after`` at ×1 and every load scale, on each of ``SEED_OFFSETS``
    (quick horizon): how far a change moves attainment against the seeds' own spread."""
    rows = []
    for s in scenarios:
        for scale in (1.0, *LOAD_SCALES):
            for off in SEED_OFFSETS:
                drawn = dataclasses.replace(scaled(s, scale), seed=s.seed + off)
                r = {x.policy: x for x in run_scenario(drawn, True, (before, after))}
                rows.append((s.name, scale, off, r[before], r[after]))
    return rows


def run(quick: bool) -> Section:
    t0 = time.monotonic()
    scenarios = [load_token_scenario(p) for p in sorted(SCENARIOS.glob("*.toml"))]
    spent: dict[str, list[tokens_bound.PoolSpend]] = {}
    results = [r for s in scenarios
               for r in run_scenario(s, quick, spent=spent if s.name == SPEND_SCENARIO
                                     else None)]
    main = [r for r in results if r.policy in POLICIES]
    variants = [r for r in results if r.policy not in POLICIES or r.policy == "switchyard"]
    loads = load_sensitivity(scenarios)
    seeds = seed_check(scenarios, "switchyard", LIST_COST)
    notes = _notes(scenarios, results, variants, quick)
    notes += money_notes(scenarios, results, spent, quick)
    notes += [f"#### Load sensitivity (every region's rate ×{', ×'.join(map(str, LOAD_SCALES))}"
              ", quick horizon)", tokens_report.load_table(loads, LOAD_OTHERS),
              tokens_report.load_summary(loads),
              *(tokens_report.load_summary(loads, o) for o in LOAD_OTHERS),
              tokens_report.adoption_verdict(variants, loads, "switchyard", ONE_PROBE),
              tokens_report.adoption_verdict(variants, loads, "switchyard", LIST_COST),
              tokens_report.adoption_verdict(variants, loads, FASTEST_FALLBACK, "switchyard"),
              tokens_report.default_verdict(variants, loads, NO_MOVE, "switchyard"),
              tokens_report.default_verdict(variants, loads, "switchyard", FLEET),
              f"#### Seed check (quick horizon, ×1 and every load, seeds "
              f"+{', +'.join(map(str, SEED_OFFSETS))}): `{LIST_COST}` against "
              "`switchyard` (`switchyard-one-probe`'s: ARCHITECTURE.md, 4 of 16 cases lower)",
              tokens_report.seed_table(seeds, "switchyard", LIST_COST),
              tokens_report.seed_verdict(seeds, "switchyard", LIST_COST)]
    return Section(title=TITLE, command=command_for(__name__, quick),
                   table=tokens_report.table(main), notes=notes,
                   elapsed_s=time.monotonic() - t0)


def _notes(scenarios: list[TokenScenario], results: list[tokens_report.TokenResult],
           variants: list[tokens_report.TokenResult], quick: bool) -> list[str]:
    shapes = "; ".join(
        f"`{s.name}` ({s.trace} lengths, {len(s.deployments)} servers in {len(s.regions)} "
        f"regions, {sum(r.load_rps for r in s.regions.values()):g} streams/s, "
        f"{s.shared_fraction:.0%} of streams in sessions sharing a prefix, classes "
        + ", ".join(f"{c.name} {c.share:.0%} TTFT ≤ {c.ttft_ms:g} ms TPOT ≤ {c.tpot_ms:g} ms"
                    for c in s.classes)
        + "".join(f"; `{w.prefix}*` {w.factor:g}× slower from {w.at_s:g} s"
                  for w in s.slowdowns) + ")"
        for s in scenarios)
    horizon = "quick" if quick else "full"
    return [
        "**Simulated**: the servers are emulated (prefill rate, decode time growing with the "
        "batch, prefix cache, per accelerator; `benchmarks/scenarios/tokens/*.toml`), not "
        f"GPUs. Lengths: {TRACE_SOURCE} (quantile tables computed from the two CSVs, "
        "`benchmarks/costsim/tokens_workload.py`). Prefix sharing is stated per scenario, "
        "not from the trace (the trace has no prompt content).",
        f"Scenarios ({horizon} horizon, the first {scenarios[0].warmup_s:g} s are warm-up and "
        f"not counted): {shapes}. Held out (written after the others; no parameter of "
        "`placement/streams.py` was chosen on them; `placement/stream_move.py`'s were set "
        "before its first run, and the one alternative measured on tokens-slowdown, a slack "
        "before a predicted miss counts, was rejected): "
        + "; ".join(f"`{k}` ({v})" for k, v in HELD_OUT.items()) + ".",
        "Cost model: GPU time billed per token — the stream's own prefill time plus its "
        "share of the server's batch's decode time (∫ dt / batch size, every edge's streams "
        "in the batch), times the deployment's $/GPU-hour from `examples/prices.toml`; idle "
        "GPU time is billed to no one. The Python edge's `x-cost-usd` bills the same way but "
        "divides a decode by its own streams there at the attempt's start + 1 (it sees no "
        "other edge's), which equals the bill only where one edge uses a server "
        "(`python -m benchmarks.tokens_price`). `$/1M output tokens` = billed $ / output "
        "tokens × 10⁶.",
        "What each policy knows: `switchyard` is one edge per region running the edge's own "
        "`StreamStats` (learned prefill rate and TPOT line, its own streams in flight, prefix "
        "holders, its own streams still prefilling) into `placement.streams.choose_stream` with "
        "its defaults, as `services/edge/generation.py` calls it (each edge learns alone: "
        "the fleet's estimates placement puts on route rows are not simulated); it does not see "
        "other edges' streams or the servers' queues. It also counts each of its decoding "
        "streams' tokens into `placement.stream_move.MoveWatch` (every "
        f"{MOVE_CHECK_MS:g} ms here, at each token in the edge) and moves a stream whose pace "
        f"over its last {MOVE_WINDOW} tokens, {MOVE_CONFIRM} tokens in a row, predicts a "
        "miss of its TPOT objective, at most "
        f"{MAX_MOVES}×, to the cheapest deployment of its variant predicted to finish it "
        f"within {1 - MOVE_MARGIN:.0%} of the objective (re-prefill of prompt + delivered "
        "tokens at twice its predicted TTFT); **simulated** resumption: the old server drops "
        "the stream at once, the new one prefills the prompt plus the delivered tokens (less "
        "a cached session prefix; billed) and decodes the rest. The baselines see the true state of "
        "every server when they choose (more than a real router has): round-robin, "
        "least-loaded (streams waiting or running), prefix-affinity (llm-d-like: prefix-cache "
        "scorer weight 3 + queue scorer weight 2, cost and distance ignored), lowest-latency "
        "(fastest predicted TTFT from the true queue and cache).",
        *tokens_report.verdicts(results),
        *tokens_report.slowdown_notes(results),
        *tokens_report.move_notes(results),
        "#### Ablations of `placement/streams.py` and `placement/stream_move.py` (same "
        "streams, the same functions without one of their parts)",
        tokens_report.table(variants),
        *tokens_report.before_after(variants, "switchyard", ONE_PROBE),
        *tokens_report.warmup_notes(variants, "switchyard", ONE_PROBE),
        *tokens_report.before_after(variants, "switchyard", LIST_COST),
        *tokens_report.before_after(variants, FASTEST_FALLBACK, "switchyard"),
        *tokens_report.before_after(variants, NO_MOVE, "switchyard"),
        *tokens_report.before_after(variants, "switchyard", LEARNED),
        *tokens_report.before_after(variants, "switchyard-learned-band-only", "switchyard"),
        *tokens_report.before_after(variants, "switchyard-no-guard-band", "switchyard"),
        *tokens_report.before_after(variants, "switchyard-no-pending", "switchyard"),
        *tokens_report.before_after(variants, "switchyard", "switchyard-live-tpot"),
        *tokens_report.before_after(variants, "switchyard", FLEET),
        *tokens_report.before_after(variants, "switchyard", FLEET_INSTANT),
        f"`{ONE_PROBE}`: an unmeasured deployment (no estimate yet: predicted at its table "
        "p95 and cost 0, so the cheapest), an option for any number of this edge's streams at "
        f"once by default, is feasible only while the edge has fewer than {UNMEASURED_PROBES} "
        "stream(s) on it (`choose_stream(unmeasured_probes=...)`: one probe at a time until "
        "it is measured), and a best effort is judged among measured deployments (its seed "
        "check, two seeds at ×1 and every load, found 4 of 16 cases lower beyond the seeds' "
        "spread: not the default; ARCHITECTURE.md).",
        f"`{LIST_COST}` (issue 14): a deployment's predicted stream cost prices the decode "
        "as if the stream ran alone there (`choose_stream(share_batch=False)`: price × "
        "(prefill + max_tokens × TPOT)) instead of sharing it with this edge's own streams "
        "there (÷ (load + 1)): an edge counts only its own streams, so the share discounts "
        "the deployments it already uses against those other edges fill (which run the "
        "fuller batches), and each edge ranks the fleet differently; priced alone, every edge "
        "ranks it by price × speed alike. The seed check below decides whether it replaces "
        "the default.",
        f"`{FASTEST_FALLBACK}`: a stream nothing is predicted to serve in time goes to the "
        "fastest deployment (lowest predicted TTFT + max_tokens × TPOT), the best effort "
        "before this round; the default takes the cheapest of those within "
        f"{FALLBACK_BAND:.0%} of the fastest's sum (`placement.streams.FALLBACK_BAND`). "
        f"`{NO_MOVE}`: no stream moves mid-decode (the default before moves: a stream "
        "left its deployment only after a failure). "
        f"`{LEARNED}`: each edge also learns a TTFT margin per deployment "
        "(`placement/stream_guard.py`: the "
        f"{GUARD_QUANTILE:.0%} quantile of its last ≤ {GUARD_WINDOW} observed − predicted "
        f"first-token gaps younger than {GUARD_MAX_AGE_S:g} s, or how late a stream still "
        "waiting there already is) and a deployment must also meet "
        f"`TTFT + margin ≤ objective × {1 - GUARDED_HEADROOM:g}` (a feedback loop on what the "
        "edge observes; not what the edge runs); `switchyard-learned-band-only`: the learned "
        "margin instead of the fixed band (`ttft_headroom=0`); "
        f"`switchyard-no-guard-band`: `ttft_headroom=0` (a prediction may use the whole TTFT "
        f"objective; the default leaves {TTFT_HEADROOM:.0%} of it for other edges' prefills "
        "the edge cannot see); `switchyard-no-pending`: the edge's own streams still waiting "
        "for their first token do not enter the TTFT prediction (the Python edge passes them "
        "since this benchmark: `StreamStats.pending`); `switchyard-live-tpot`: the TPOT "
        "prediction multiplied per deployment by how much slower than predicted this edge's "
        "streams decoding there now are (`placement.stream_guard.tpot_factors`, from the same "
        "pace the moves measure; not what the edge runs).",
        f"`{FLEET}`: the fleet's view of prefill queues, as the live path would carry it "
        "(backend → agent → placement → route rows → edge; **simulated**, the live wiring is "
        "not built): every "
        f"{REPORT_EVERY_MS / 1000:g} s each server's uncached prompt tokens still waiting for "
        f"a first token (every edge's streams), usable {PUSH_DELAY_MS:g} ms after the sample; "
        "each edge adds the other edges' part of it (reported minus its own pending tokens "
        "as of the sample, `placement.streams.FleetQueue`) to its own pending prefills in "
        f"the TTFT prediction (`choose_stream(fleet=...)`); `{FLEET_INSTANT}`: the same view "
        "every 50 ms with no push delay, an upper bound the live path cannot reach (how much "
        "of the gain the staleness costs).",
    ]


def money_notes(scenarios: list[TokenScenario], results: list[tokens_report.TokenResult],
                spent: dict[str, list[tokens_bound.PoolSpend]], quick: bool) -> list[str]:
    """Where the money goes on ``SPEND_SCENARIO`` (per pool) and each scenario's offline
    lower bound (``benchmarks/costsim/tokens_bound.py``) against the run's rows."""
    by = {(r.scenario, r.policy): (r.both, r.usd_per_1m_out) for r in results}
    lines = [f"#### Where the money goes ({SPEND_SCENARIO}, same run) and what ≥ "
             f"{tokens_report.ATTAINMENT_TARGET:.0%} could cost at best"]
    spend_scn = next((s for s in scenarios if s.name == SPEND_SCENARIO), None)
    if spend_scn is not None and spent:
        lines.append(tokens_bound.spend_table(spend_scn, spent))
        lines += [tokens_bound.spend_summary(spend_scn, p, rows) for p, rows in spent.items()]
    lines.append("Per pool (a region's GPUs of one kind, price class and variant), counted "
                 "streams; a moved stream's cost is on the pool it started on; `$/1M out at "
                 "full batch` is the pool's decode floor at its listed speed (price × "
                 "TPOT(max batch) / max batch).")
    lines.append(
        "Lower bound (`benchmarks/costsim/tokens_bound.py`, an LP over the same counted "
        "streams, scipy HiGHS): it knows every stream in advance (arrival, region, class, "
        "lengths, session prefix, speed noise) and each server's true speed when the stream "
        "arrives (slowdowns included); it assumes no queueing (each server's prefill ms and "
        "decode share only summed over each period between slowdowns), every session prefix "
        "cached wherever it goes, each stream's decode billed at the largest mean batch its "
        "TPOT objective allows (the per-token share tpot(n)/n falls with n and is convex, so "
        "no batch sequence meeting the objective bills less), streams split fractionally, "
        f"and it picks the ≤ {1 - tokens_report.ATTAINMENT_TARGET:.0%} of streams it misses "
        "(billed at their cheapest server's full-batch rate). No router can do better; it is "
        "loose (a real router has queues and partial batches).")
    for s in scenarios:
        streams = generate_streams(s, quick)
        bound = tokens_bound.lower_bound(s, streams, TokenSim(s, streams).rtt,
                                         tokens_report.ATTAINMENT_TARGET)
        progress(f"tokens: {s.name}: lower bound ${bound.usd_per_1m_out:.3f}/1M")
        lines.append(tokens_bound.bound_line(
            bound, s.name, {p: by[(s.name, p)] for p in ("switchyard", "lowest-latency")},
            tokens_report.ATTAINMENT_TARGET, tokens_report.CHEAPER_TARGET))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a shorter horizon, same rates")
    p.add_argument("--only", choices=POLICIES + VARIANTS + REJECTED + ORACLES,
                   help="run this one policy on every scenario and print it (RESULTS.md "
                        "untouched)")
    p.add_argument("--scale", type=float, default=1.0, help="with --only: every region's rate "
                                                            "× this")
    p.add_argument("--seed-offset", type=int, default=0,
                   help="with --only: every scenario's seed + this (other streams: seed noise)")
    args = p.parse_args()
    if args.only:
        for path in sorted(SCENARIOS.glob("*.toml")):
            s = scaled(load_token_scenario(path), args.scale)
            s = dataclasses.replace(s, seed=s.seed + args.seed_offset)
            for r in run_scenario(s, args.quick, (args.only,)):
                print(f"{r.scenario} ×{args.scale:g} seed +{args.seed_offset} {r.policy}: "
                      f"{r.both:.2%} within both, "
                      f"${r.usd_per_1m_out:.3f}/1M output tokens, p99 TTFT "
                      f"{r.ttft_p99_ms:,.0f} ms")
        return
    section = run(args.quick)
    print(section.markdown())
    write_section(section, RESULTS)  # benchmarks.cost's: keeps dated ### subsections
    progress(f"tokens: wrote '{section.title}' into {RESULTS}")


if __name__ == "__main__":
    main()
