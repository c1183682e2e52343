"""Tables, notes and the cost-vs-attainment plot for the cost simulation."""

from __future__ import annotations

import math
import pathlib

from benchmarks.common import md_table
from benchmarks.costsim.engine import SimResult
from benchmarks.costsim.runner import Bound
from benchmarks.costsim.scenario import Scenario

HEADERS = ("policy", "USD / 1M calls", "× LP at same attainment", "SLO attainment",
           "p50 ms", "p95 ms", "p99 ms", "failed", "attempts / call", "sim CPU s")


def rows(results: list[SimResult], b: Bound) -> list[list[object]]:
    out: list[list[object]] = []
    for r in results:
        ref = b.at_policy[r.policy].cost_per_million
        out.append([r.policy, r.cost_per_million(),
                    f"{r.cost_per_million() / ref:.2f}" if ref and not math.isnan(ref) else "–",
                    f"{r.attainment:.2%}", r.latency_pct(50), r.latency_pct(95),
                    r.latency_pct(99), r.failed, f"{r.attempts / max(r.calls, 1):.3f}",
                    r.wall_s])
    out.append([f"LP lower bound (attainment {b.max_attainment:.2%})",
                b.at_max.cost_per_million, "1.00", f"{b.max_attainment:.2%}",
                "–", "–", "–", f"{b.at_max.unplaced:.0f}", "–", "–"])
    return out


def table(results: list[SimResult], b: Bound) -> str:
    return md_table(HEADERS, rows(results, b))


def notes(s: Scenario, results: list[SimResult], b: Bound, calls: int, quick: bool) -> list[str]:
    by = {r.policy: r for r in results}
    out = [
        f"Scenario `{s.source}`: {len(s.clouds)} clouds, {len(s.regions)} regions, "
        f"{len(s.pools)} GPU pools ({sum(p.gpus for p in s.pools)} GPUs), "
        f"{len(s.models)} models; {calls:,} calls over one simulated day compressed into "
        f"{s.quick_duration_s if quick else s.duration_s:.0f} s; "
        f"{len(s.outages)} outages, {len(s.bursts)} bursts. Same trace and same service-time "
        "noise for every policy.",
        "USD / 1M calls: billed cost per served call (price per GPU-second × actual service "
        "seconds, the project's cost model). SLO attainment: calls answered within their "
        "SLO / all calls (failed calls miss). Latency percentiles over answered calls.",
        "× LP: the policy's cost over the LP bound solved at the attainment the policy's own "
        "assignment reaches under the LP's latency model (see the LP note below).",
    ]
    sw, fast = by.get("switchyard"), by.get("lowest-latency")
    if sw is not None:
        ref = b.at_max.cost_per_million
        gap = sw.cost_per_million() / ref - 1 if ref else float("nan")
        met = sw.attainment >= 0.995 and gap <= 0.05
        out.append(f"Target — within 5 % of the LP bound at ≥ 99.5 % attainment: switchyard "
                   f"{sw.cost_per_million():.2f} USD/1M at {sw.attainment:.2%} vs bound "
                   f"{ref:.2f} at {b.max_attainment:.2%} ({gap:+.0%}): "
                   f"**{'met' if met else 'missed'}**.")
        if fast is not None:
            saving = 1 - sw.cost_per_million() / fast.cost_per_million()
            equal = sw.attainment >= fast.attainment - 0.001
            out.append(f"Target — ≥ 40 % cheaper than lowest-latency at equal attainment: "
                       f"{saving:.0%} cheaper, attainment {sw.attainment:.2%} vs "
                       f"{fast.attainment:.2%}: **"
                       f"{'met' if saving >= 0.4 and equal else 'missed'}**"
                       f"{'' if equal else ' (attainment not equal)'}.")
    out.append(
        "The LP bound is a *fluid* bound: it knows the whole trace, splits calls "
        "fractionally, bills mean service time, and calls a deployment feasible when "
        "`rtt + mean service <= SLO` with pools capped at "
        f"{s.settings.lp_utilisation_cap:.0%} per {s.settings.lp_bucket_s:.0f} s bucket but no "
        "queueing delay. It is loose: what a real router can reach at 99.5 % lies between it "
        "and the policies. A policy lands below it only by missing SLOs (see its attainment) "
        "or by running a pool above the cap (worst utilisation below).")
    whole = by.get("switchyard-whole-slots")
    if sw is not None and whole is not None:
        out.append(
            "Slot shares (`switchyard` vs `switchyard-whole-slots`, same trace): every edge "
            "applies the same once-a-second table and counts only its own calls in flight. "
            "With shares, placement splits each deployment's slots among the edges sending "
            "it calls, by their reported call rates plus a probe allowance (`edge_slots`), "
            "and an edge past its share expects to queue, so tight calls spill to the next "
            "deployment: "
            f"{sw.attainment:.2%} attainment at {sw.cost_per_million():.1f} USD/1M, against "
            f"{whole.attainment:.2%} at {whole.cost_per_million():.1f} without them, where "
            "every edge fills every slot of the cheapest feasible deployment until the next "
            "table (herding).")
    out.append(
        "What is left of switchyard's gap: herds where no shares are known yet (at start, "
        "when a pool returns from an outage and its edges' reports have expired), "
        "observed p95s that keep a pool looking slow for a while after its queue has "
        "drained (256-sample windows forgotten after 10 idle refreshes; placement keeps "
        "reports 60 s), and queueing the table's 1 s refresh cannot see coming (bursts).")
    for r in results:
        c = b.checks[r.policy]
        out.append(f"`{r.policy}` under the LP's model: {c.model_attainment:.2%} of calls on "
                   f"latency-feasible deployments, worst pool utilisation in a "
                   f"{s.settings.lp_bucket_s:.0f} s bucket {c.worst_utilisation:.2f} "
                   f"(cap {s.settings.lp_utilisation_cap}); fallbacks {r.fallbacks}, "
                   f"LiteLLM cooldowns {r.cooldowns}.")
    return out


def plot(results: list[SimResult], b: Bound, path: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    front = [(p.attainment, p.cost_per_million) for p in b.frontier
             if not math.isnan(p.cost_per_million)]
    if front:
        ax.plot([100 * a for a, _ in front], [c for _, c in front], "k--", marker=".",
                label="LP lower bound")
    for r in results:
        ax.scatter(100 * r.attainment, r.cost_per_million(), s=60, zorder=3)
        ax.annotate(r.policy, (100 * r.attainment, r.cost_per_million()),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("SLO attainment (% of calls within their SLO)")
    ax.set_ylabel("USD per 1M calls")
    ax.set_title("Cost vs SLO attainment, same trace")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
