"""Where a Switchyard Envoy edge's CPU goes: each piece of its config switched on alone.

One Triton (tiny model), placement (the access-log sink, and the ADS server of ``envoy-sy``),
and one Envoy process (1 worker) per variant of ``benchmarks/envoy_configs.py``: plain Envoy,
plain Envoy plus ONE piece of what placement pushes (Lua hint check, Lua body peek, aggregate
cluster, retry policy, upstream header_mutation, upstream Lua rewrite, gRPC access log, the
per-deployment cluster; stats switched off as a diagnostic), all of it as a static bootstrap
(``sy``), the same pushed by placement over delta ADS (``envoy-sy``: as ``switchyard up`` starts
an Envoy edge, so with the C dynamic module where it loads; ``envoy-sy-lua``: pushed with
``[edge] envoy_filters = "lua"``), and alternatives for the expensive pieces. The same
closed-loop load (``benchmarks/_load.py``) hits every variant in turn, each round in a rotated
order; every ratio is taken against plain Envoy *in the same round* and the table gives its
median over the rounds with the min–max spread. The C dynamic module's variants
(``benchmarks/envoy_dynmod.py``: ``dm-peek``, ``sy-dm``) need ``native/build.sh`` to have built
it; without it they are reported as not started.

    python -m benchmarks.envoy_filters [--quick] [--only NAME,NAME...] [--rounds N]
                                       [--conc C,C...] [--before DIR] [--module-before DIR]

``--only ablation``: ``sy`` and every variant of ``benchmarks/envoy_ablation.py`` (``sy`` with
one thing removed), with a table of what each removal saved against ``sy`` in the same round.
``--only bisect``: ``dm`` (the config placement pushes to a module node, static) and each
difference from plain Envoy taken out of it (``benchmarks/envoy_bisect.py``), with ``envoy-sy``
beside it and a table of what each removal saved against ``dm`` in the same round.
``--module-before DIR``: ``dm-before``, ``dm`` loading the module built in DIR (an older
commit's ``native/build``), paired with ``dm`` in each round.
``--before DIR``: ``sy-before``, the whole config as the commit exported at DIR compiles it
(``benchmarks/envoy_before.py``), paired with ``sy`` in each round.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence

from benchmarks._fleet import Fleet, Target, _wait_infer
from benchmarks._load import Point, measure, schedstat_seconds
from benchmarks.common import Section, command_for, main, md_table, progress, take_option
from benchmarks.dataplane import _loop_factory, start_switchyard_envoy
from benchmarks.envoy_ablation import ABLATIONS
from benchmarks.envoy_before import BeforeVariant
from benchmarks.envoy_bisect import BISECT
from benchmarks.envoy_configs import VARIANTS as LUA_VARIANTS
from benchmarks.envoy_configs import Variant
from benchmarks.envoy_dynmod import DM_VARIANTS
from services.ports import free_port
from services.xds import native

VARIANTS: dict[str, Variant | BeforeVariant] = {
    **LUA_VARIANTS, **{v.name: v for v in (*DM_VARIANTS, *ABLATIONS, *BISECT)}}
# ``--only ablation``: the full config and every one-thing-removed variant of it;
# ``--only bisect``: the pushed module config (``dm``) and each difference from plain taken out
GROUPS = {"ablation": ("sy", *(v.name for v in ABLATIONS), "sy-2var"),
          "bisect": (*(v.name for v in BISECT), "envoy-sy")}
MODULE_VARIANTS = (*DM_VARIANTS, *(v for v in BISECT if v.name != "dm-no-module"))
# ``--module-before DIR``: ``dm`` with the module built in DIR (an older commit's native/),
# paired with ``dm`` in each round
DM_BEFORE = Variant("dm-before", "dm with the module of --module-before", BISECT[0].model,
                    BISECT[0].edits)

ESTIMATE_S = (420, 1100)
BASELINE = "plain"
ADS = "envoy-sy"  # as placement pushes it: the C dynamic module where it loads ([edge] auto)
ADS_LUA = "envoy-sy-lua"  # the same pushed with [edge] envoy_filters = "lua"
ADS_WHAT = {ADS: "Switchyard as placement pushes it (delta ADS)",
            ADS_LUA: "the same, pushed with envoy_filters = lua"}


def start_variant(fleet: Fleet, v: Variant | BeforeVariant,
                  module_before: pathlib.Path | None = None) -> Target:
    if v in MODULE_VARIANTS or v is DM_BEFORE:
        where = module_before if v is DM_BEFORE and module_before else native.BUILD_DIR
        if not native.available(where):
            raise RuntimeError(f"{native.module_path(where)} is not built (native/build.sh)")
        os.environ[native.SEARCH_PATH_ENV] = str(where)  # inherited by Envoy
    port = free_port()
    p = fleet.start_envoy(v.name, v.bootstrap(fleet.triton_address, fleet.placement_address,
                                              port, free_port()))
    address = f"127.0.0.1:{port}"
    _wait_infer(address, v.model, 30, fleet.tmp / f"{v.name}.log")
    return Target(v.name, address, v.model, [p.pid])


def start_all(fleet: Fleet, names: Sequence[str], module_before: pathlib.Path | None = None
              ) -> tuple[dict[str, Target], dict[str, str]]:
    """Every variant that starts and answers; the others with the reason they did not."""
    fleet.start_triton()
    fleet.start_placement()
    targets: dict[str, Target] = {}
    failed: dict[str, str] = {}
    for name in names:
        progress(f"starting {name}")
        try:
            targets[name] = (start_switchyard_envoy(fleet, ADS) if name == ADS else
                             start_switchyard_envoy(fleet, ADS_LUA, "lua") if name == ADS_LUA
                             else start_variant(fleet, VARIANTS[name], module_before))
        except RuntimeError as exc:
            failed[name] = str(exc).splitlines()[0]
            progress(f"{name} did not start: {failed[name]}")
    return targets, failed


def run_rounds(targets: dict[str, Target], calls: int, seconds: float,
               concurrencies: Sequence[int], rounds: int) -> list[dict[tuple[str, int], Point]]:
    names = list(targets)
    out = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        by: dict[tuple[str, int], Point] = {}
        for conc in concurrencies:
            for n in order:
                t = targets[n]
                p = measure(n, t.address, t.model, conc, calls, seconds, t.pids(),
                            warmup=min(200, calls // 4), loop_factory=_loop_factory(),
                            cpu_of=schedstat_seconds)
                by[(n, conc)] = p
                progress(f"round {r + 1}/{rounds} c={conc:<3} {n:<12} {p.rps:7.0f} rps  "
                         f"p50 {p.p50_ms:5.2f} ms  {p.proxy_cpu_us:5.0f} µs/call"
                         + (f"  ERRORS {p.errors}" if p.errors else ""))
        out.append(by)
    return out


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def ratio_rows(rounds: list[dict[tuple[str, int], Point]], names: Sequence[str],
               concurrencies: Sequence[int]) -> list[list[object]]:
    """Per variant: CPU per call / plain's (same round) per concurrency, added p50 at the
    lowest concurrency vs plain, errors; medians with the min–max over rounds."""
    rows: list[list[object]] = []
    low = min(concurrencies)
    for n in names:
        row: list[object] = [n, VARIANTS[n].what if n in VARIANTS else ADS_WHAT[n]]
        for conc in concurrencies:
            row.append(_spread([r[(n, conc)].proxy_cpu_us / r[(BASELINE, conc)].proxy_cpu_us
                                for r in rounds if (n, conc) in r and (BASELINE, conc) in r]))
        row.append(_spread([r[(n, low)].p50_ms - r[(BASELINE, low)].p50_ms
                            for r in rounds if (n, low) in r], "{:+.2f}"))
        row.append(_spread([statistics.median(r[(BASELINE, c)].proxy_cpu_us for c in
                                              concurrencies) for r in rounds], "{:.0f}")
                   if n == BASELINE else "")
        row.append(sum(r[(n, c)].errors for r in rounds for c in concurrencies if (n, c) in r))
        rows.append(row)
    return rows


TARGET_RATIO = 1.25
PIECE_NAMES = ("dep-cluster", "lua-peek", "aggregate", "retry", "hdr-mutation", "up-lua", "als")


# Alternatives against what they would replace, paired within each round.
PAIRS = (("sy-dm", "sy"), ("dm-peek", "lua-peek"), ("sy-no-lua", "sy"), ("sy-first", "sy"),
         ("sy-gfe", "sy"), ("envoy-sy", "sy"), ("hints+gfe", "lua-peek"), ("gfe", "lua-peek"),
         ("sy", "sy-before"), ("sy", "sy-no-hc"), ("sy-sb50", "sy"), ("sy-sb200", "sy"),
         ("envoy-sy", "sy-no-hc"), ("envoy-sy", "envoy-sy-lua"), ("envoy-sy-lua", "sy"),
         ("sy-dm1", "envoy-sy"), ("sy-dm1-no-up", "sy-dm1"), ("dm", "envoy-sy"),
         ("dm", "dm-before"))


def pair_rows(rounds: list[dict[tuple[str, int], Point]],
              concurrencies: Sequence[int]) -> list[list[object]]:
    """CPU per call of an alternative over its reference's, same round, per concurrency."""
    rows: list[list[object]] = []
    for alt, ref in PAIRS:
        cells = [_spread([r[(alt, c)].proxy_cpu_us / r[(ref, c)].proxy_cpu_us
                          for r in rounds if (alt, c) in r and (ref, c) in r])
                 for c in concurrencies]
        if any(c != "–" for c in cells):
            below = sum(r[(alt, c)].proxy_cpu_us < r[(ref, c)].proxy_cpu_us
                        for r in rounds for c in concurrencies if (alt, c) in r and (ref, c) in r)
            total = sum((alt, c) in r and (ref, c) in r for r in rounds for c in concurrencies)
            rows.append([f"{alt} / {ref}", *cells, f"{below}/{total}"])
    return rows


def _saved(rounds: list[dict[tuple[str, int], Point]], name: str, conc: int,
           base: str = "sy") -> list[float]:
    """Per round: (base − variant) CPU per call in units of plain Envoy's, same round."""
    return [(r[(base, conc)].proxy_cpu_us - r[(name, conc)].proxy_cpu_us)
            / r[(BASELINE, conc)].proxy_cpu_us for r in rounds
            if (name, conc) in r and (base, conc) in r and (BASELINE, conc) in r]


ABLATION_NAMES = GROUPS["ablation"][1:]
BISECT_NAMES = tuple(v.name for v in BISECT[1:])


def ablation_rows(rounds: list[dict[tuple[str, int], Point]],
                  concurrencies: Sequence[int], base: str = "sy",
                  names: Sequence[str] = ABLATION_NAMES) -> list[list[object]]:
    """Per one-thing-removed variant: its CPU per call over plain's, and what removing the
    thing saved against ``base`` in plain's units (same round), with how often it saved."""
    rows: list[list[object]] = []
    for n in names:
        saved = {c: _saved(rounds, n, c, base) for c in concurrencies}
        if not any(saved.values()):
            continue
        ratios = [_spread([r[(n, c)].proxy_cpu_us / r[(BASELINE, c)].proxy_cpu_us
                           for r in rounds if (n, c) in r and (BASELINE, c) in r])
                  for c in concurrencies]
        below = sum(v > 0 for c in concurrencies for v in saved[c])
        total = sum(len(saved[c]) for c in concurrencies)
        rows.append([n, VARIANTS[n].what, *ratios,
                     *[_spread(saved[c], "{:+.2f}") for c in concurrencies],
                     f"{below}/{total}"])
    return rows


def ablation_verdicts(rounds: list[dict[tuple[str, int], Point]],
                      concurrencies: Sequence[int], base: str = "sy",
                      names: Sequence[str] = ABLATION_NAMES) -> list[str]:
    """The ablation's prose, computed from its rows: per concurrency, the removals that saved
    most (median), and which saved in at least 3 of 4 points (the rest is within noise)."""
    out = []
    for conc in concurrencies:
        whole = _median_ratio(rounds, base, conc)
        med = {n: statistics.median(v) for n in names if (v := _saved(rounds, n, conc, base))}
        if whole is None or not med:
            continue
        ranked = sorted(med.items(), key=lambda kv: -kv[1])
        out.append(f"c={conc}: `{base}` is {whole:.2f}× plain (+{whole - 1:.2f}); removing one "
                   "thing saved (median, plain's units; for a variant that adds something, "
                   "minus what it costs), largest first: "
                   + ", ".join(f"{n} {v:+.2f}" for n, v in ranked[:8]) + ".")
    steady = [n for n in names
              if (v := [x for c in concurrencies for x in _saved(rounds, n, c, base)])
              and sum(x > 0 for x in v) >= 0.75 * len(v)]
    if steady:
        out.append("Saved in at least 3 of 4 points (every concurrency): "
                   + ", ".join(f"`{n}`" for n in steady) + "; every other removal is within "
                   "the round-to-round noise.")
    return out


def _median_ratio(rounds: list[dict[tuple[str, int], Point]], name: str,
                  conc: int) -> float | None:
    vals = [r[(name, conc)].proxy_cpu_us / r[(BASELINE, conc)].proxy_cpu_us
            for r in rounds if (name, conc) in r and (BASELINE, conc) in r]
    return statistics.median(vals) if vals else None


# What the active health checks add (d554ad0), each against the config without them or
# with fewer of them, paired within each round.
HEALTH_PAIRS = (("sy", "sy-no-hc", "the deployment cluster's active health checks"),
                ("envoy-sy", "sy-no-hc", "the config as placement pushes it, checks included"),
                ("sy-sb50", "sy", "50 idle health-checked standby clusters"),
                ("sy-sb200", "sy", "200 idle health-checked standby clusters"))


def health_verdicts(rounds: list[dict[tuple[str, int], Point]],
                    concurrencies: Sequence[int]) -> list[str]:
    """Per health-check pair: the median CPU-per-call ratio per concurrency, and whether the
    rounds' spread includes 1.00 (within the round-to-round noise) or not."""
    out = []
    for alt, ref, what in HEALTH_PAIRS:
        parts = []
        for c in concurrencies:
            v = [r[(alt, c)].proxy_cpu_us / r[(ref, c)].proxy_cpu_us
                 for r in rounds if (alt, c) in r and (ref, c) in r]
            if not v:
                continue
            med = statistics.median(v)
            verdict = ("within noise: the rounds' spread includes 1.00" if min(v) <= 1 <= max(v)
                       else "MORE CPU in every round" if min(v) > 1 else "less in every round")
            parts.append(f"c={c}: {med:.2f}× ({min(v):.2f}–{max(v):.2f}; {verdict})")
        if parts:
            out.append(f"`{alt}` / `{ref}`, {what}: " + "; ".join(parts) + ".")
    return out


def verdicts(rounds: list[dict[tuple[str, int], Point]],
             concurrencies: Sequence[int]) -> list[str]:
    """The prose under the table, computed from its rows."""
    out = []
    for whole in ("sy", "sy-dm", "dm", ADS, ADS_LUA):
        ratios = {c: _median_ratio(rounds, whole, c) for c in concurrencies}
        got = {c: r for c, r in ratios.items() if r is not None}
        if got:
            worst = max(got.values())
            out.append(f"`{whole}` costs " + ", ".join(f"{r:.2f}× (c={c})"
                                                        for c, r in got.items())
                       + f" plain Envoy's CPU per call: the ≤ {TARGET_RATIO}× target is "
                       + ("met." if worst <= TARGET_RATIO else "MISSED."))
    for conc in concurrencies:
        pieces = {n: _median_ratio(rounds, n, conc) for n in PIECE_NAMES}
        known = {n: r - 1 for n, r in pieces.items() if r is not None}
        whole_r = _median_ratio(rounds, "sy", conc)
        if len(known) < 2 or whole_r is None:
            continue
        ranked = sorted(known.items(), key=lambda kv: -kv[1])
        out.append(f"c={conc}: pieces over plain, largest first: "
                   + ", ".join(f"{n} {v:+.2f}" for n, v in ranked)
                   + f"; their sum {sum(known.values()):+.2f} against `sy`'s "
                   f"{whole_r - 1:+.2f}.")
    return out


DEFAULT_CONCURRENCIES = (1, 8)  # beyond 8 a slower proxy batches more: CPU/call flatters it


def run(quick: bool, only: str = "", rounds: int = 0,
        concurrencies: tuple[int, ...] = DEFAULT_CONCURRENCIES, before: str = "",
        module_before: str = "") -> Section:
    """``before``: an export of an older commit; ``sy-before`` is its config (``sy`` paired
    against it in each round). ``module_before``: a directory holding an older build of the
    module; ``dm-before`` is ``dm`` loading it (``dm`` paired against it)."""
    calls, seconds, default_rounds = (1000, 3.0, 5) if quick else (2000, 6.0, 7)
    rounds = rounds or default_rounds
    if before:
        b = BeforeVariant(pathlib.Path(before))
        VARIANTS[b.name] = b
    if module_before:
        VARIANTS[DM_BEFORE.name] = DM_BEFORE
    names = [BASELINE, *[n for n in VARIANTS if n != BASELINE], ADS, ADS_LUA]
    if only:
        wanted = {n for w in only.split(",") for n in GROUPS.get(w, (w,))}
        wanted |= {"sy", "sy-before"} if before else set()
        wanted |= {"dm", "dm-before"} if module_before else set()
        names = [n for n in names if n == BASELINE or n in wanted]
    t0 = time.monotonic()
    with Fleet() as fleet:
        targets, failed = start_all(fleet, names,
                                    pathlib.Path(module_before) if module_before else None)
        if BASELINE not in targets:
            raise RuntimeError(f"plain Envoy did not start: {failed.get(BASELINE)}")
        progress(f"{rounds} rounds of {calls} calls or {seconds:.0f} s per point, "
                 f"concurrency {', '.join(map(str, concurrencies))}")
        results = run_rounds(targets, calls, seconds, concurrencies, rounds)
    rows = ratio_rows(results, list(targets), concurrencies)
    header = ["variant", "what is switched on",
              *[f"CPU/plain c={c}" for c in concurrencies],
              f"added p50 ms vs plain, c={min(concurrencies)}", "plain CPU µs/call", "errors"]
    table = md_table(header, rows, "ll" + "r" * (len(header) - 2))
    pairs = pair_rows(results, concurrencies)
    if pairs:
        table += ("\n\n**Alternatives against what they replace (CPU per call, same round)**"
                  "\n\n" + md_table(["pair", *[f"c={c}" for c in concurrencies],
                                      "points cheaper"], pairs, "l" + "r" * (len(pairs[0]) - 1)))
    ablation = ablation_rows(results, concurrencies)
    if ablation:
        table += ("\n\n**Ablation: `sy` with one thing removed (CPU per call; saved = (sy − "
                  "variant) / plain, same round)**\n\n" + md_table(
                      ["variant", "what is changed", *[f"CPU/plain c={c}" for c in concurrencies],
                       *[f"saved c={c}" for c in concurrencies], "points saved"],
                      ablation, "ll" + "r" * (len(ablation[0]) - 2)))
    bisect = ablation_rows(results, concurrencies, "dm", BISECT_NAMES)
    if bisect:
        table += ("\n\n**Bisect: `dm` (the pushed module config) with one difference from plain "
                  "taken out (CPU per call; saved = (dm − variant) / plain, same round)**\n\n"
                  + md_table(["variant", "what is changed",
                              *[f"CPU/plain c={c}" for c in concurrencies],
                              *[f"saved c={c}" for c in concurrencies], "points saved"],
                             bisect, "ll" + "r" * (len(bisect[0]) - 2)))
    print("\n" + table + "\n", file=sys.stderr)
    notes = [
        f"{rounds} rounds; each point {calls} calls or {seconds:.0f} s after "
        f"{min(200, calls // 4)} warm-up calls; each ratio against plain Envoy in the same "
        "round, given as median (min–max over rounds). Envoy CPU = on-CPU time of its threads "
        "over the measured window (/proc/<pid>/task/*/schedstat, ns resolution).",
        "Every Envoy runs 1 worker (`--concurrency 1`); placement (access-log sink, ADS) and "
        "Triton are not billed. Shared machine: absolute µs are inflated; read the ratios.",
        *verdicts(results, concurrencies),
        *ablation_verdicts(results, concurrencies),
        *ablation_verdicts(results, concurrencies, "dm", BISECT_NAMES),
        *health_verdicts(results, concurrencies),
        *[f"`{n}` did not start: {why}" for n, why in failed.items()],
    ]
    return Section("Envoy edge: CPU per call by piece (issue 12)",
                   command_for(__name__, quick) + (f" --only {only}" if only else "")
                   + (f" --rounds {rounds}" if rounds != default_rounds else "")
                   + (f" --conc {','.join(map(str, concurrencies))}"
                      if concurrencies != DEFAULT_CONCURRENCIES else "")
                   + (" --before <export of the old commit>" if before else "")
                   + (" --module-before <old commit's native/build>" if module_before else ""),
                   table, notes,
                   elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    only = take_option("--only", "")
    rounds = int(take_option("--rounds", "0"))
    conc = tuple(int(c) for c in take_option("--conc", "1,8").split(","))
    before = take_option("--before", "")
    module_before = take_option("--module-before", "")
    main(lambda quick: run(quick, only, rounds, conc, before, module_before), __doc__)
