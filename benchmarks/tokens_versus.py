"""Where a Switchyard policy's extra dollars go against the cheapest-feasible oracle, stream by
stream (issue 14's diagnosis, simulated).

    python -m benchmarks.tokens_versus [--scenario tokens-reclaim] [--seed-offset 0] [--quick]
        [--policy switchyard] [--oracle cheapest-feasible-oracle-slack20]

Both policies route the same streams (``benchmarks/costsim/tokensim.py``). For every counted
stream (after the warm-up) the Switchyard policy's choice is recorded with its prediction on
every deployment (``placement.streams.StreamOption``). Printed: the extra $ (policy's bill −
the oracle's, per stream) by SLO class, by (class, policy's pool, oracle's pool), and, for the
streams the oracle sent to another pool more cheaply, why the policy did not choose that pool
by its own prediction there: its TTFT over the headroom's limit but within the objective (the
guard band), over the objective, its TPOT over the objective, feasible but priced dearer, at
the load bound, or unmeasured; with the TTFT the policy predicted there against what the
oracle's stream met. Printed only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
from collections import defaultdict

import numpy as np

from benchmarks.costsim.tokens_names import make_policy
from benchmarks.costsim.tokens_workload import generate_streams, load_token_scenario
from benchmarks.costsim.tokensim import Outcome, TokenSim
from benchmarks.tokens import SCENARIOS
from placement.streams import StreamAsk, StreamChoice, StreamOption

# per stream: its choice, its ask, the learned prefill rate per deployment and the age (s) of
# the edge's last sample there when it chose
Seen = dict[int, tuple[StreamChoice, StreamAsk, dict[str, float], dict[str, float]]]


def _run(name: str, scenario: str, offset: int, quick: bool,
         seen: Seen | None = None) -> tuple[Outcome, TokenSim]:
    s = load_token_scenario(pathlib.Path(SCENARIOS, scenario.removeprefix("tokens-") + ".toml"))
    s = dataclasses.replace(s, seed=s.seed + offset)
    sim = TokenSim(s, generate_streams(s, quick))
    policy = make_policy(name, sim, s.seed)
    if seen is not None:
        inner = policy.admitted  # type: ignore[attr-defined]
        ended = policy.finished  # type: ignore[attr-defined]
        clock, last = [0.0], {}

        def finished(sid: int, sim_: TokenSim) -> None:
            d = sim_.deployments[policy._open[sid][0]].id  # type: ignore[attr-defined]
            last[(int(sim_.streams.region[sid]), d)] = clock[0]
            ended(sid, sim_)

        policy.finished = finished  # type: ignore[attr-defined]

        def admitted(sid: int, edge: int, now: float, sim_: TokenSim, choice: StreamChoice,
                     ask: StreamAsk) -> StreamChoice:
            clock[0] = now
            est = policy.stats[edge].estimates(policy.cands[edge])  # type: ignore[attr-defined]
            seen[sid] = (choice, ask, {d: e.prefill_ms_per_token for d, e in est.items()},
                         {d: (now - last[(edge, d)]) / 1000.0 for d in est
                          if (edge, d) in last})
            out: StreamChoice = inner(sid, edge, now, sim_, choice, ask)
            return out

        policy.admitted = admitted  # type: ignore[attr-defined]
    return sim.run(policy), sim


def why(o: StreamOption | None, chosen: StreamOption, ask: StreamAsk) -> str:
    """Why the policy's prediction kept it off option ``o`` (the oracle's pool): the first
    of these that holds."""
    if o is None or not o.measured:
        return "unmeasured"
    checks = (
        (ask.tpot_ms is not None and o.tpot_ms > ask.tpot_ms, "TPOT over the objective"),
        (ask.ttft_ms is not None and o.ttft_ms > ask.ttft_ms, "TTFT over the objective"),
        (not o.feasible, "TTFT in the guard band"),
        (o.load >= o.bound > 0, "feasible, at the load bound"),
        (o.cost_usd >= chosen.cost_usd, "feasible, priced dearer"),
    )
    return next((name for hit, name in checks if hit),
                "feasible, cheaper, not chosen (band/hash)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="tokens-reclaim")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--policy", default="switchyard")
    p.add_argument("--oracle", default="cheapest-feasible-oracle-slack20")
    a = p.parse_args()
    seen: Seen = {}
    out, sim = _run(a.policy, a.scenario, a.seed_offset, a.quick, seen)
    ora, _ = _run(a.oracle, a.scenario, a.seed_offset, a.quick)
    s, st = sim.s, sim.streams
    deps = [d.id for d in s.deployments]
    m = st.t_ms >= s.warmup_s * 1000.0
    ttft_goal = np.array([c.ttft_ms for c in s.classes])[st.klass]
    tpot_goal = np.array([c.tpot_ms for c in s.classes])[st.klass]

    def ok(o: Outcome) -> np.ndarray:
        return (o.ttft_ms <= ttft_goal) & np.where(np.isnan(o.tpot_ms), st.output <= 1,
                                                   o.tpot_ms <= tpot_goal)

    tokens = float(st.output[m].sum())
    print(f"{s.name} +{a.seed_offset}{' quick' if a.quick else ''}: {a.policy} "
          f"{ok(out)[m].mean():.2%} ${out.cost_usd[m].sum() / tokens * 1e6:.3f}/1M, "
          f"{a.oracle} {ok(ora)[m].mean():.2%} ${ora.cost_usd[m].sum() / tokens * 1e6:.3f}/1M")
    extra = out.cost_usd - ora.cost_usd
    total_extra = float(extra[m].sum())
    print(f"extra $ {total_extra:.4f} ({total_extra / tokens * 1e6:.3f}/1M)")
    for k, c in enumerate(s.classes):
        mk = m & (st.klass == k)
        print(f"  class {c.name}: {int(mk.sum())} streams, extra ${extra[mk].sum():.4f} "
              f"({extra[mk].sum() / total_extra:.0%}); {a.policy} ${out.cost_usd[mk].sum():.4f}"
              f" {ok(out)[mk].mean():.2%}, oracle ${ora.cost_usd[mk].sum():.4f} "
              f"{ok(ora)[mk].mean():.2%}; best efforts "
              f"{sum(1 for i in np.flatnonzero(mk) if i in seen and not seen[i][0].slo_met)}")
    pairs: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for i in np.flatnonzero(m):
        key = (s.classes[int(st.klass[i])].name, deps[int(out.deployment[i])],
               deps[int(ora.deployment[i])])
        pairs[key][0] += 1
        pairs[key][1] += float(extra[i])
    print("top (class, policy's pool -> oracle's pool) by extra $:")
    for key, (n, usd) in sorted(pairs.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"  {key[0]:9s} {key[1]:50s} -> {key[2]:50s} {int(n):5d} ${usd:+.4f} "
              f"({usd / total_extra:+.0%})")
    # (class, kind, why) → per stream: extra $, predicted TTFT / objective on the oracle's
    # pool, the oracle's TTFT there / objective, learned rate / listed, age of the last sample
    reasons: dict[tuple[str, str, str], list[tuple[float, ...]]] = defaultdict(list)
    for i in np.flatnonzero(m):
        if i not in seen or out.deployment[i] == ora.deployment[i] or extra[i] <= 0:
            continue
        choice, ask, rates, ages = seen[i]
        dd = int(ora.deployment[i])
        o = {o.candidate.deployment_id: o for o in choice.options}.get(deps[dd])
        kind = "best effort" if not choice.slo_met else "predicted feasible"
        goal = float(ask.ttft_ms or 1.0)
        listed = s.deployments[dd].prefill_ms(int(st.prompt[i])) / int(st.prompt[i])
        reasons[(s.classes[int(st.klass[i])].name, kind, why(o, choice.chosen, ask))].append(
            (float(extra[i]), o.ttft_ms / goal if o and o.measured else math.nan,
             float(ora.ttft_ms[i]) / goal, rates.get(deps[dd], math.nan) / listed,
             ages.get(deps[dd], math.nan)))
    print("streams the oracle served more cheaply elsewhere, by why the policy's prediction "
          "kept off the oracle's pool; medians: the policy's predicted TTFT there / objective, "
          "the oracle's stream's TTFT / objective, the policy's learned prefill rate there / "
          "the pool's listed rate, the age of the edge's last sample there:")
    for key, rows in sorted(reasons.items(), key=lambda kv: -sum(r[0] for r in kv[1])):
        a_ = np.array(rows)
        usd = float(a_[:, 0].sum())
        med = [float(np.nanmedian(a_[:, j])) if np.isfinite(a_[:, j]).any() else math.nan
               for j in range(1, 5)]
        print(f"  {key[0]:9s} {key[1]:18s} {key[2]:40s} {len(rows):5d} ${usd:.4f} "
              f"({usd / total_extra:.0%}) pred {med[0]:.2f} met {med[1]:.2f} rate x{med[2]:.2f}"
              f" age {med[3]:.0f} s")
    print("per pool (counted streams): streams and $ by the policy / by the oracle, and after "
          "the scenario's slowdowns")
    cut = min((ev.at_s for ev in s.slowdowns), default=math.inf) * 1000.0
    for k, d in enumerate(deps):
        a_, o_ = m & (out.deployment == k), m & (ora.deployment == k)
        if a_.any() or o_.any():
            print(f"  {d:52s} {int(a_.sum()):5d} ${out.cost_usd[a_].sum():7.4f} / "
                  f"{int(o_.sum()):5d} ${ora.cost_usd[o_].sum():7.4f}; arrived after "
                  f"{cut / 1000:.0f} s {int((a_ & (st.t_ms >= cut)).sum())} / "
                  f"{int((o_ & (st.t_ms >= cut)).sum())}")
    # the prompt lengths of the guard band's streams
    band = [i for i in np.flatnonzero(m) if i in seen and out.deployment[i] != ora.deployment[i]
            and extra[i] > 0]
    if band:
        pr = st.prompt[band]
        print(f"those streams' prompts: p25 {np.percentile(pr, 25):.0f}, p50 "
              f"{np.percentile(pr, 50):.0f}, p75 {np.percentile(pr, 75):.0f}; all counted "
              f"streams' p50 {np.percentile(st.prompt[m], 50):.0f}")


if __name__ == "__main__":
    main()
