"""Tables, notes and the sweep plot for ``python -m benchmarks.cost --all-scenarios``.

Every sentence that states a result is computed from the rows it summarises.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

from benchmarks.common import md_table
from benchmarks.costsim.misses import CAUSES
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.suite import LOADS, SIGMAS, Bounds, PolicyRun, SweepPoint

ATTAINMENT_TARGET = 0.995
LP_TARGET = 1.25
SAVING_TARGET = 0.40
HEADERS = ("scenario", "policy", "SLO attainment", "USD / 1M calls", "× LP at own attainment",
           "× queueing bound at own attainment", "failed", "p95 ms")

Suite = Sequence[tuple[Scenario, list[PolicyRun], Bounds]]


def _ratio(cost: float, ref: float) -> str:
    return f"{cost / ref:.2f}" if ref and not math.isnan(ref) and not math.isnan(cost) else "–"


def table(suite: Suite) -> str:
    rows: list[list[object]] = []
    for s, runs, b in suite:
        for pr in runs:
            r = pr.result
            rows.append([s.name, r.policy, f"{r.attainment:.2%}", r.cost_per_million(),
                         _ratio(r.cost_per_million(), b.lp_at[r.policy].cost_per_million),
                         _ratio(r.cost_per_million(), b.q_at[r.policy].cost_per_million),
                         r.failed, r.latency_pct(95)])
        rows.append([s.name, f"LP bound (max {b.lp_max:.2%})", f"{b.lp_995.attainment:.2%}",
                     b.lp_995.cost_per_million, "1.00", "–", "–", "–"])
        rows.append([s.name, f"queueing bound (max {b.q_max:.2%})",
                     f"{b.q_995.attainment:.2%}", b.q_995.cost_per_million, "–", "1.00", "–",
                     "–"])
    return md_table(HEADERS, rows, "llrrrrrr")


def misses_table(suite: Suite, policy: str = "switchyard") -> str:
    rows = []
    for s, runs, _ in suite:
        pr = next((p for p in runs if p.result.policy == policy), None)
        if pr is None:
            continue
        missed = sum(pr.misses.values())
        rows.append([s.name, missed, *[pr.misses.get(c, 0) for c in CAUSES]])
    return md_table(("scenario", f"{policy} misses", *CAUSES), rows)


def targets(suite: Suite) -> list[list[object]]:
    """Per scenario: switchyard against the issue's three targets."""
    out: list[list[object]] = []
    for s, runs, b in suite:
        by = {p.result.policy: p.result for p in runs}
        sw, fast = by.get("switchyard"), by.get("lowest-latency")
        if sw is None or fast is None:
            continue
        x_lp = sw.cost_per_million() / b.lp_at["switchyard"].cost_per_million
        saving = 1 - sw.cost_per_million() / fast.cost_per_million()
        out.append([s.name, f"{sw.attainment:.2%}", f"{fast.attainment:.2%}", f"{x_lp:.2f}",
                    f"{saving:.0%}", _verdict(sw.attainment >= ATTAINMENT_TARGET
                                              or sw.attainment >= fast.attainment),
                    _verdict(x_lp <= LP_TARGET),
                    _verdict(saving >= SAVING_TARGET and sw.attainment >= fast.attainment)])
    return out


def _why(suite: Suite, scenario: str, policy: str = "switchyard") -> str:
    """Why ``scenario`` is hard, from its misses by cause: the two largest causes."""
    for s, runs, _ in suite:
        pr = next((p for p in runs if p.result.policy == policy), None)
        if s.name != scenario or pr is None or not pr.misses:
            continue
        total = sum(pr.misses.values())
        top = [(c, n) for c, n in pr.misses.most_common(2) if n]
        return ": of its " + f"{total:,} misses " + " and ".join(
            f"{n:,} ({n / total:.0%}) are '{c}'" for c, n in top)
    return ""


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def notes(suite: Suite, quick: bool, sweep_path: pathlib.Path | None,
          sweep_plot: str | None) -> list[str]:
    total = sum(len(runs) for _, runs, _ in suite)
    calls = {s.name: runs[0].result.calls for s, runs, _ in suite if runs}
    rows = targets(suite)
    out = [
        f"{len(suite)} scenarios × {total // max(len(suite), 1)} policies, "
        f"{'quick (compressed day)' if quick else 'full'} horizons: "
        + ", ".join(f"`{n}` {c:,} calls" for n, c in calls.items()) + ". Each scenario's "
        "policies see the same trace and the same service-time noise.",
        "× LP: the policy's cost over the fluid LP bound (no queueing, see the single-scenario "
        "section) solved at the attainment the policy actually reached (capped just below "
        "the bound's own maximum). × queueing bound: the same over the bound that counts a "
        "call as met with the probability that `rtt + M/G/c wait + service` fits its SLO at "
        "the utilisation its pool runs at (`benchmarks/costsim/qbound.py`). The bound rows "
        "give each bound at 99.5 % attainment (or its maximum, if lower).",
        "Targets per scenario (switchyard): attainment ≥ 99.5 % (or at least lowest-latency's), "
        "cost ≤ 1.25× LP, ≥ 40 % cheaper than lowest-latency at equal or better attainment:\n",
        md_table(("scenario", "switchyard", "lowest-latency", "× LP at switchyard's attainment",
                  "cheaper than LL",
                  "attainment", "≤ 1.25× LP", "≥ 40 % cheaper"), rows, "lrrrrlll"),
    ]
    if rows:
        worst = min(rows, key=lambda r: float(str(r[1]).rstrip("%")))
        met = sum(1 for r in rows if all(v == "met" for v in r[5:]))
        out.append(f"All three targets met on {met} of {len(rows)} scenarios; the hardest "
                   f"for attainment is `{worst[0]}` (switchyard {worst[1]} against "
                   f"lowest-latency's {worst[2]}){_why(suite, str(worst[0]))}.\n")
    out.append("Switchyard's missed calls by cause (first that applies, "
               "`benchmarks/costsim/misses.py`):\n")
    out.append(misses_table(suite))
    if sweep_path is not None and sweep_plot is not None:
        out.append(f"Sweep on `{sweep_path.name}` ({'quick' if quick else 'full'} horizon): "
                   f"service-time σ over {', '.join(map(str, SIGMAS))} and load "
                   f"× {', '.join(map(str, LOADS))}, switchyard against lowest-latency "
                   f"(`{sweep_plot}`):\n")
    return out


def sweep_table(points: Sequence[SweepPoint]) -> str:
    rows = []
    for var in ("sigma", "load"):
        values = sorted({p.value for p in points if p.variable == var})
        for v in values:
            at = {p.policy: p for p in points if p.variable == var and p.value == v}
            sw, fast = at.get("switchyard"), at.get("lowest-latency")
            if sw is None or fast is None:
                continue
            rows.append([f"σ = {v}" if var == "sigma" else f"load × {v}",
                         f"{sw.attainment:.2%}", sw.cost_per_million,
                         f"{fast.attainment:.2%}", fast.cost_per_million,
                         f"{1 - sw.cost_per_million / fast.cost_per_million:.0%}"])
    return md_table(("point", "switchyard", "USD / 1M", "lowest-latency", "USD / 1M",
                     "cheaper"), rows)


def plot_sweep(points: Sequence[SweepPoint], path: pathlib.Path, title: str) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), dpi=110, sharex="col")
    for col, (var, label) in enumerate((("sigma", "service-time σ"), ("load", "load ×"))):
        for policy, style in (("switchyard", "o-"), ("lowest-latency", "s--")):
            pts = sorted((p for p in points if p.variable == var and p.policy == policy),
                         key=lambda p: p.value)
            xs = [p.value for p in pts]
            axes[0][col].plot(xs, [100 * p.attainment for p in pts], style, label=policy)
            axes[1][col].plot(xs, [p.cost_per_million for p in pts], style, label=policy)
        axes[0][col].axhline(100 * ATTAINMENT_TARGET, color="grey", lw=0.8, ls=":")
        axes[0][col].set_ylabel("SLO attainment (%)")
        axes[1][col].set_ylabel("USD per 1M calls")
        axes[1][col].set_xlabel(label)
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
