"""Token benchmark metrics per policy, the table, and notes computed from its rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.common import md_table
from benchmarks.costsim.tokens_workload import Streams, TokenScenario
from benchmarks.costsim.tokensim import Outcome

ATTAINMENT_TARGET = 0.99
CHEAPER_TARGET = 0.40


@dataclass(frozen=True, slots=True)
class TokenResult:
    scenario: str
    policy: str
    streams: int
    both: float  # share of streams within both objectives
    ttft_met: float
    tpot_met: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    usd_per_1m_out: float
    output_tokens: int
    cost_usd: float
    cache_hit: float  # prompt tokens served from a prefix cache / prompt tokens
    # streams (counted ones) already on a deployment when it slowed down, and how many of
    # them missed an objective: no choice made after the slowdown could save them
    caught: int = 0
    caught_missed: int = 0
    caught_moved: int = 0  # of the caught, moved to another deployment (a policy that moves)
    moved: int = 0  # streams moved mid-decode (``placement.stream_move``)
    moved_met: int = 0  # of those, within both objectives
    # the warm-up's streams (not counted above): how many missed their TTFT objective, and
    # the longest TTFT of any stream (a cold start's queue shows here)
    warmup_streams: int = 0
    warmup_ttft_missed: int = 0
    max_ttft_ms: float = math.nan


def measure(s: TokenScenario, st: Streams, out: Outcome, policy: str) -> TokenResult:
    """Metrics over the streams that arrived after the warm-up (all served by then)."""
    m = st.t_ms >= s.warmup_s * 1000.0
    ttft_goal = np.array([c.ttft_ms for c in s.classes])[st.klass]
    tpot_goal = np.array([c.tpot_ms for c in s.classes])[st.klass]
    ttft_ok = out.ttft_ms <= ttft_goal  # NaN (never served) counts as a miss
    tpot_ok = np.where(np.isnan(out.tpot_ms), st.output <= 1, out.tpot_ms <= tpot_goal)
    tokens = int(st.output[m].sum())
    cost = float(out.cost_usd[m].sum())
    caught = m & _caught(s, st, out)
    moved = m & (out.moved_to >= 0)
    return TokenResult(
        s.name, policy, int(m.sum()), float((ttft_ok & tpot_ok)[m].mean()),
        float(ttft_ok[m].mean()), float(tpot_ok[m].mean()),
        float(np.percentile(out.ttft_ms[m], 50)), float(np.percentile(out.ttft_ms[m], 99)),
        cost / tokens * 1e6 if tokens else math.nan, tokens, cost,
        float(out.cache_hit[m].sum() / st.prompt[m].sum()), int(caught.sum()),
        int((caught & ~(ttft_ok & tpot_ok)).sum()), int((caught & moved).sum()),
        int(moved.sum()), int((moved & ttft_ok & tpot_ok).sum()), int((~m).sum()),
        int((~m & ~ttft_ok).sum()), float(np.nanmax(out.ttft_ms)))


def _pairs(results: Sequence[TokenResult], before: str, after: str
           ) -> list[tuple[str, TokenResult, TokenResult]]:
    """Per scenario with both policies' rows: (scenario, ``before``'s, ``after``'s)."""
    out = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        b, a = _find(results, scenario, before), _find(results, scenario, after)
        if b is not None and a is not None:
            out.append((scenario, b, a))
    return out


def warmup_notes(results: Sequence[TokenResult], before: str, after: str) -> list[str]:
    """Per scenario, the warm-up's TTFT misses and the longest TTFT, ``before`` → ``after``
    (a cold start: every edge's deployments unmeasured)."""
    lines = []
    for scenario, b, a in _pairs(results, before, after):
        lines.append(f"{scenario}, warm-up (not counted): {before} {b.warmup_ttft_missed} of "
                     f"{b.warmup_streams:,} streams over their TTFT objective, longest TTFT "
                     f"{b.max_ttft_ms / 1000:,.1f} s → {after} {a.warmup_ttft_missed}, "
                     f"{a.max_ttft_ms / 1000:,.1f} s.")
    return lines


def _caught(s: TokenScenario, st: Streams, out: Outcome) -> np.ndarray:
    """Streams routed before a slowdown to a deployment it hit and still running then."""
    caught = np.zeros(len(st), dtype=bool)
    ids = np.array([d.id for d in s.deployments])
    end = st.t_ms + out.ttft_ms + np.nan_to_num(out.tpot_ms) * np.maximum(st.output - 1, 0)
    for w in s.slowdowns:
        hit = np.char.startswith(ids, w.prefix)[np.maximum(out.deployment, 0)]
        at = w.at_s * 1000.0
        caught |= hit & (out.deployment >= 0) & (st.t_ms < at) & (end > at)
    return caught


def slowdown_notes(results: Sequence[TokenResult], policy: str = "switchyard") -> list[str]:
    """For scenarios with slowdowns: how many of ``policy``'s misses were streams already
    running on a GPU when it slowed, and what its moves did (computed from the rows)."""
    lines = []
    for r in results:
        if r.policy != policy or not r.caught:
            continue
        missed = round((1 - r.both) * r.streams)
        moves = (f" {r.moved} streams were moved mid-decode (`placement.stream_move`), "
                 f"{r.caught_moved} of those caught by a slowdown; {r.moved_met} of the "
                 f"{r.moved} ended within both objectives." if r.moved else
                 " No stream was moved mid-decode.")
        lines.append(
            f"{r.scenario}, {policy}: {r.caught} streams were already on a GPU when it slowed "
            f"down and {r.caught_missed} of them missed an objective ({r.caught_missed} of its "
            f"{missed} misses, {r.caught_missed / missed:.0%}); the other "
            f"{missed - r.caught_missed} were chosen before or after." + moves if missed else
            f"{r.scenario}, {policy}: {r.caught} streams were already on a GPU when it slowed "
            "down; none missed an objective." + moves)
    return lines


def move_notes(results: Sequence[TokenResult], policy: str = "switchyard") -> list[str]:
    """Per scenario, the streams ``policy`` moved mid-decode and how they ended."""
    return [f"{r.scenario}, {policy}: {r.moved} of {r.streams:,} streams moved mid-decode, "
            f"{r.moved_met} of them within both objectives."
            for r in results if r.policy == policy]


HEADERS = ["scenario", "policy", "streams", "both objectives", "TTFT met", "TPOT met",
           "TTFT p50 ms", "TTFT p99 ms", "$/1M output tokens", "vs lowest-latency",
           "prefix-cache hits"]


def table(results: Sequence[TokenResult]) -> str:
    rows = []
    for r in results:
        ll = _find(results, r.scenario, "lowest-latency")
        vs = f"{r.usd_per_1m_out / ll.usd_per_1m_out - 1:+.0%}" if ll else "–"
        rows.append([r.scenario, r.policy, r.streams, f"{r.both:.2%}", f"{r.ttft_met:.2%}",
                     f"{r.tpot_met:.2%}", r.ttft_p50_ms, r.ttft_p99_ms,
                     f"{r.usd_per_1m_out:.3f}", vs, f"{r.cache_hit:.1%}"])
    return md_table(HEADERS, rows, "llrrrrrrrrr")


def _find(results: Sequence[TokenResult], scenario: str, policy: str) -> TokenResult | None:
    return next((r for r in results if r.scenario == scenario and r.policy == policy), None)


def verdicts(results: Sequence[TokenResult], policy: str = "switchyard") -> list[str]:
    """The issue's three targets for ``policy``, per scenario, stated from the rows."""
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        me = _find(results, scenario, policy)
        ll = _find(results, scenario, "lowest-latency")
        pa = _find(results, scenario, "prefix-affinity")
        if me is None or ll is None or pa is None:
            continue
        att = "met" if me.both >= ATTAINMENT_TARGET else "MISSED"
        cheaper = 1 - me.usd_per_1m_out / ll.usd_per_1m_out
        equal = me.both >= min(ll.both, ATTAINMENT_TARGET)
        cost = ("met" if cheaper >= CHEAPER_TARGET and equal else
                "MISSED" + ("" if equal else f" (below {ATTAINMENT_TARGET:.0%} where "
                                             "lowest-latency is not)"))
        p99 = "met" if me.ttft_p99_ms <= pa.ttft_p99_ms else "MISSED"
        lines.append(
            f"{scenario}, {policy}: {me.both:.2%} of streams within both objectives "
            f"(target ≥ {ATTAINMENT_TARGET:.0%}: {att}); ${me.usd_per_1m_out:.3f} per 1M "
            f"output tokens, {cheaper:.0%} cheaper than lowest-latency's "
            f"${ll.usd_per_1m_out:.3f} at {ll.both:.2%} (target ≥ {CHEAPER_TARGET:.0%} "
            f"cheaper at equal attainment, both at ≥ {ATTAINMENT_TARGET:.0%} or neither: "
            f"{cost}); p99 TTFT {me.ttft_p99_ms:,.0f} ms vs "
            f"prefix-affinity's {pa.ttft_p99_ms:,.0f} ms (target: at least as good: {p99}).")
    return lines


def before_after(results: Sequence[TokenResult], before: str, after: str) -> list[str]:
    lines = []
    for scenario, b, a in _pairs(results, before, after):
        lines.append(f"{scenario}: {before} {b.both:.2%} within both at "
                     f"${b.usd_per_1m_out:.3f}/1M → {after} {a.both:.2%} at "
                     f"${a.usd_per_1m_out:.3f}/1M (p99 TTFT {b.ttft_p99_ms:,.0f} → "
                     f"{a.ttft_p99_ms:,.0f} ms).")
    return lines


def load_table(rows: Sequence[tuple[float, dict[str, TokenResult]]],
               others: Sequence[str]) -> str:
    """Switchyard against lowest-latency and prefix-affinity at other loads (one row each),
    with ``others`` (Switchyard variants) beside it."""
    out = []
    for scale, r in rows:
        sy, ll, pa = r["switchyard"], r["lowest-latency"], r["prefix-affinity"]
        row: list[object] = [
            sy.scenario, f"×{scale:g}", f"{sy.both:.2%}", f"{sy.usd_per_1m_out:.3f}",
            f"{ll.both:.2%}", f"{ll.usd_per_1m_out:.3f}",
            f"{1 - sy.usd_per_1m_out / ll.usd_per_1m_out:.0%}", sy.ttft_p99_ms,
            pa.ttft_p99_ms, "yes" if _all_met(sy, ll, pa) else "no"]
        for other in others:
            o = r[other]
            row += [f"{o.both:.2%}", f"{1 - o.usd_per_1m_out / ll.usd_per_1m_out:.0%}",
                    "yes" if _all_met(o, ll, pa) else "no"]
        out.append(row)
    heads = ["scenario", "load", "switchyard both", "switchyard $/1M", "lowest-latency both",
             "lowest-latency $/1M", "switchyard cheaper by", "switchyard TTFT p99 ms",
             "prefix-affinity TTFT p99 ms", "all 3 targets"]
    for other in others:
        heads += [f"{other} both", f"{other} cheaper by", f"{other} all 3"]
    return md_table(heads, out, "llrrrrrrrl" + "rrl" * len(others))


def default_verdict(at_one: Sequence[TokenResult],
                    rows: Sequence[tuple[float, dict[str, TokenResult]]],
                    current: str, candidate: str) -> str:
    """Whether ``candidate`` should replace ``current`` as the default: it must hold all
    three targets in more load cases and lower no scenario's share within both objectives
    at ×1 (``at_one``: the full-horizon rows)."""
    def held(policy: str) -> int:
        return sum(_all_met(r[policy], r["lowest-latency"], r["prefix-affinity"])
                   for _, r in rows)

    lowered = []
    for scenario in dict.fromkeys(r.scenario for r in at_one):
        a, b = _find(at_one, scenario, current), _find(at_one, scenario, candidate)
        if a is not None and b is not None and b.both < a.both:
            fewer = round(a.both * a.streams) - round(b.both * b.streams)
            lowered.append(f"{scenario} {a.both:.2%} → {b.both:.2%} ({fewer} fewer of "
                           f"{b.streams:,} streams)")
    n, m = held(current), held(candidate)
    keep = m > n and not lowered
    return (f"Default: `{candidate}` holds all three targets in {m} of {len(rows)} load cases "
            f"(`{current}`: {n})"
            + (f" and lowers at ×1 {', '.join(lowered)}" if lowered else
               " and lowers no scenario at ×1")
            + (": it passes the rule for replacing the default (more load cases held, no "
               "scenario lower at ×1)." if keep else
               f": it fails the rule for replacing the default (more load cases held, no "
               f"scenario lower at ×1); `{current}` stays the default."))


def _all_met(sy: TokenResult, ll: TokenResult, pa: TokenResult) -> bool:
    return not missed_targets(sy, ll, pa)


def missed_targets(sy: TokenResult, ll: TokenResult, pa: TokenResult) -> list[str]:
    """The targets ``sy`` misses against lowest-latency ``ll`` and prefix-affinity ``pa``,
    each with its number (none: all three hold)."""
    out = []
    if sy.both < ATTAINMENT_TARGET:
        out.append(f"attainment {sy.both:.2%}")
    cheaper = 1 - sy.usd_per_1m_out / ll.usd_per_1m_out
    if cheaper < CHEAPER_TARGET:
        out.append(f"cost {cheaper:.0%} cheaper")
    if sy.ttft_p99_ms > pa.ttft_p99_ms:
        out.append(f"p99 TTFT {sy.ttft_p99_ms:,.0f} > {pa.ttft_p99_ms:,.0f} ms")
    return out


def load_summary(rows: Sequence[tuple[float, dict[str, TokenResult]]],
                 policy: str = "switchyard") -> str:
    met = [f"{r[policy].scenario} ×{scale:g}" for scale, r in rows
           if _all_met(r[policy], r["lowest-latency"], r["prefix-affinity"])]
    missed = [f"{r[policy].scenario} ×{scale:g} ({', '.join(why)})" for scale, r in rows
              if (why := missed_targets(r[policy], r["lowest-latency"], r["prefix-affinity"]))]
    return (f"`{policy}`: at other loads (every region's rate scaled; quick horizon) all three "
            f"targets hold in {len(met)} of {len(rows)} cases"
            + (f"; not in {', '.join(missed)}." if missed else "."))


def adoption_verdict(at_one: Sequence[TokenResult],
                     rows: Sequence[tuple[float, dict[str, TokenResult]]],
                     before: str, after: str) -> str:
    """Whether ``after`` may replace ``before``: no case (a scenario at ×1, full horizon, or
    at another load) in which ``before`` held ≥ 99 % within both falls below it."""
    cases = [(f"{r.scenario} ×1", _find(at_one, r.scenario, before), r)
             for r in at_one if r.policy == after]
    cases += [(f"{r[after].scenario} ×{scale:g}", r.get(before), r[after])
              for scale, r in rows if after in r]
    lost = [f"{name} {b.both:.2%} → {a.both:.2%}" for name, b, a in cases
            if b is not None and b.both >= ATTAINMENT_TARGET > a.both]
    cheaper = sum(1 for _, b, a in cases if b is not None
                  and a.usd_per_1m_out < b.usd_per_1m_out)
    return (f"`{after}` against `{before}` over {len(cases)} cases (×1 and the load table): "
            f"cheaper in {cheaper}; "
            + (f"below {ATTAINMENT_TARGET:.0%} where `{before}` was not: {', '.join(lost)}: "
               "not kept by the rule (no case falls below a target it met)." if lost else
               f"no case falls below {ATTAINMENT_TARGET:.0%} where `{before}` held it: kept by "
               "the rule."))


# (scenario, load scale, seed offset, before's row, after's row)
SeedRow = tuple[str, float, int, TokenResult, TokenResult]


def _seed_cases(rows: Sequence[SeedRow]) -> dict[tuple[str, float], list[SeedRow]]:
    cases: dict[tuple[str, float], list[SeedRow]] = {}
    for row in rows:
        cases.setdefault((row[0], row[1]), []).append(row)
    return cases


def seed_table(rows: Sequence[SeedRow], before: str, after: str) -> str:
    """Per scenario and load, ``before`` and ``after`` within both objectives on each seed,
    their means, and the spread the seeds alone make in ``before`` (its noise)."""
    out = []
    for (scenario, scale), case in _seed_cases(rows).items():
        b = [r[3].both for r in case]
        a = [r[4].both for r in case]
        out.append([scenario, f"×{scale:g}", ", ".join(f"+{r[2]}" for r in case),
                    " / ".join(f"{x:.2%}" for x in b), " / ".join(f"{x:.2%}" for x in a),
                    f"{np.mean(b):.2%}", f"{np.mean(a):.2%}", f"{max(b) - min(b):.2%}",
                    f"{np.mean([r[3].usd_per_1m_out for r in case]):.3f}",
                    f"{np.mean([r[4].usd_per_1m_out for r in case]):.3f}"])
    return md_table(["scenario", "load", "seeds", f"{before} both", f"{after} both",
                     f"{before} mean", f"{after} mean", f"{before} seed spread",
                     f"{before} mean $/1M", f"{after} mean $/1M"], out, "lllllrrrrr")


def seed_verdict(rows: Sequence[SeedRow], before: str, after: str) -> str:
    """``after`` may replace ``before`` when in no case its mean within both over the seeds
    is lower than ``before``'s by more than ``before``'s own spread between the seeds (seed
    noise), and it is better somewhere: a higher mean beyond that spread, or cheaper."""
    lowered, higher, cheaper = [], [], 0
    cases = _seed_cases(rows)
    for (scenario, scale), case in cases.items():
        b = [r[3].both for r in case]
        a = [r[4].both for r in case]
        noise = max(b) - min(b)
        name = f"{scenario} ×{scale:g} {np.mean(b):.2%} → {np.mean(a):.2%}"
        if np.mean(a) < np.mean(b) - noise:
            lowered.append(f"{name} (seed spread {noise:.2%})")
        elif np.mean(a) > np.mean(b) + noise:
            higher.append(name)
        cheaper += (np.mean([r[4].usd_per_1m_out for r in case])
                    < np.mean([r[3].usd_per_1m_out for r in case]))
    keep = not lowered and (higher or cheaper)
    return (f"Seed check, `{after}` against `{before}` over {len(cases)} cases (quick horizon, "
            f"{len(rows) // max(len(cases), 1)} seeds each): lower within both by more than "
            f"the seeds' spread in {len(lowered)}"
            + (f" ({', '.join(lowered)})" if lowered else "")
            + f"; higher beyond it in {len(higher)}"
            + (f" ({', '.join(higher)})" if higher else "")
            + f"; cheaper on the mean in {cheaper}: "
            + ("kept by the rule (nothing lower beyond seed noise, better somewhere)." if keep
               else "not kept by the rule (nothing lower beyond seed noise, better somewhere)."))
