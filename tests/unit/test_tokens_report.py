"""The token section's prose is computed from its rows (benchmarks/costsim/tokens_report.py):
each target reads met or MISSED by the numbers, never typed by hand."""

from __future__ import annotations

import dataclasses

from benchmarks.costsim.tokens_report import (
    TokenResult,
    adoption_verdict,
    default_verdict,
    load_summary,
    load_table,
    missed_targets,
    move_notes,
    seed_table,
    seed_verdict,
    slowdown_notes,
    table,
    verdicts,
    warmup_notes,
)


def row(policy: str, both: float, usd: float, p99: float, scenario: str = "s") -> TokenResult:
    return TokenResult(scenario, policy, 100, both, both, 1.0, 50.0, p99, usd, 1000,
                       usd / 1000, 0.1)


def rows(sy: TokenResult) -> list[TokenResult]:
    return [sy, row("lowest-latency", 0.999, 4.0, 300.0), row("prefix-affinity", 0.9, 3.0,
                                                               2000.0)]


def test_targets_met_read_met() -> None:
    (line,) = verdicts(rows(row("switchyard", 0.993, 2.0, 900.0)))
    assert line.count(": met") == 3 and "50% cheaper" in line


def test_each_missed_target_reads_missed() -> None:
    (low,) = verdicts(rows(row("switchyard", 0.98, 2.0, 900.0)))
    assert "target ≥ 99%: MISSED" in low and "below 99% where lowest-latency is not" in low
    (dear,) = verdicts(rows(row("switchyard", 0.995, 3.0, 900.0)))
    assert "25% cheaper" in dear and "or neither: MISSED" in dear
    (slow,) = verdicts(rows(row("switchyard", 0.995, 2.0, 2500.0)))
    assert "at least as good: MISSED" in slow


def test_the_table_compares_cost_with_lowest_latency() -> None:
    md = table(rows(row("switchyard", 0.993, 2.0, 900.0)))
    assert "| s | switchyard | 100 | 99.30% |" in md and "| -50% |" in md


def test_the_load_summary_counts_the_cases_from_the_rows() -> None:
    good = {r.policy: r for r in rows(row("switchyard", 0.993, 2.0, 900.0))}
    bad = {**good, "switchyard": dataclasses.replace(good["switchyard"], both=0.95)}
    assert load_summary([(0.5, good), (2.0, bad)]) == (
        "`switchyard`: at other loads (every region's rate scaled; quick horizon) all three "
        "targets hold in 1 of 2 cases; not in s ×2 (attainment 95.00%).")
    other = {**bad, "v": good["switchyard"]}
    assert load_summary([(2.0, other)], "v").endswith("hold in 1 of 1 cases.")


def test_a_missed_load_case_names_each_target_it_misses_with_its_number() -> None:
    ll, pa = row("lowest-latency", 0.999, 4.0, 300.0), row("prefix-affinity", 0.9, 3.0, 2000.0)
    assert missed_targets(row("switchyard", 0.993, 2.0, 900.0), ll, pa) == []
    assert missed_targets(row("switchyard", 0.985, 3.0, 2500.0), ll, pa) == [
        "attainment 98.50%", "cost 25% cheaper", "p99 TTFT 2,500 > 2,000 ms"]
    dear = {r.policy: r for r in [row("switchyard", 0.995, 3.0, 900.0), ll, pa]}
    assert load_summary([(1.5, dear)]).endswith("not in s ×1.5 (cost 25% cheaper).")


def test_the_load_table_puts_a_variant_beside_switchyard() -> None:
    good = {r.policy: r for r in rows(row("switchyard", 0.993, 2.0, 900.0))}
    case = {**good, "switchyard": dataclasses.replace(good["switchyard"], both=0.95),
            "v": good["switchyard"]}
    md = load_table([(2.0, case)], ("v",))
    assert "| v both | v cheaper by | v all 3 |" in md
    assert md.splitlines()[-1].endswith("| no | 99.30% | 50% | yes |")
    two = load_table([(2.0, {**case, "w": case["switchyard"]})], ("v", "w"))
    assert "| v all 3 | w both | w cheaper by | w all 3 |" in two
    assert two.splitlines()[-1].endswith("| no | 99.30% | 50% | yes | 95.00% | 50% | no |")


def test_the_default_verdict_needs_more_load_cases_and_nothing_lower_at_one() -> None:
    good = {r.policy: r for r in rows(row("switchyard", 0.993, 2.0, 900.0))}
    weak = {**good, "switchyard": dataclasses.replace(good["switchyard"], both=0.95)}
    loads = [(2.0, {**weak, "v": good["switchyard"]})]  # v holds where switchyard does not
    same = [row("switchyard", 0.99, 2.0, 900.0), row("v", 0.99, 2.0, 900.0)]
    verdict = default_verdict(same, loads, "switchyard", "v")
    assert "in 1 of 1 load cases (`switchyard`: 0)" in verdict
    assert "lowers no scenario at ×1" in verdict and "it passes the rule" in verdict
    lower = [row("switchyard", 0.99, 2.0, 900.0), row("v", 0.985, 2.0, 900.0)]
    verdict = default_verdict(lower, loads, "switchyard", "v")
    assert "lowers at ×1 s 99.00% → 98.50% (1 fewer of 100 streams)" in verdict
    assert "it fails the rule" in verdict and "`switchyard` stays the default" in verdict
    no_gain = [(2.0, {**good, "v": good["switchyard"]})]
    assert "it fails the rule" in default_verdict(same, no_gain, "switchyard", "v")


def test_the_slowdown_note_counts_the_caught_streams_and_the_moves() -> None:
    hit = dataclasses.replace(row("switchyard", 0.97, 2.0, 900.0), caught=5, caught_missed=2)
    (line,) = slowdown_notes([hit, row("lowest-latency", 1.0, 3.0, 300.0)])
    assert "5 streams were already on a GPU when it slowed down" in line
    assert "2 of its 3 misses, 67%" in line and "the other 1 were chosen" in line
    assert "No stream was moved" in line
    moved = dataclasses.replace(hit, moved=4, caught_moved=3, moved_met=2)
    (line,) = slowdown_notes([moved])
    assert "4 streams were moved mid-decode" in line and "3 of those caught" in line
    assert "2 of the 4 ended within both objectives" in line
    assert slowdown_notes([row("switchyard", 0.97, 2.0, 900.0)]) == []
    assert move_notes([moved]) == ["s, switchyard: 4 of 100 streams moved mid-decode, 2 of "
                                   "them within both objectives."]


def test_the_adoption_verdict_refuses_a_case_that_falls_below_a_target_it_met() -> None:
    at_one = [row("before", 0.995, 3.0, 900.0), row("after", 0.991, 2.5, 900.0)]
    loads = [(2.0, {"before": row("before", 0.985, 2.0, 900.0),
                    "after": row("after", 0.98, 1.9, 900.0)})]  # both below: not a loss
    kept = adoption_verdict(at_one, loads, "before", "after")
    assert "over 2 cases" in kept and "cheaper in 2" in kept and "kept by the rule" in kept
    fell = [row("before", 0.995, 3.0, 900.0), row("after", 0.989, 2.5, 900.0)]
    refused = adoption_verdict(fell, loads, "before", "after")
    assert "s ×1 99.50% → 98.90%" in refused and "not kept by the rule" in refused
    dearer = [(1.5, {"before": row("before", 0.992, 2.0, 900.0),
                     "after": row("after", 0.9905, 2.1, 900.0)})]
    assert "cheaper in 1;" in adoption_verdict(at_one, dearer, "before", "after")


def test_the_warmup_note_reads_each_policys_cold_start_from_its_row() -> None:
    before = dataclasses.replace(row("old", 0.99, 1.0, 500.0), warmup_streams=400,
                                 warmup_ttft_missed=110, max_ttft_ms=66_700.0)
    after = dataclasses.replace(row("new", 0.99, 1.0, 500.0), warmup_streams=400,
                                warmup_ttft_missed=36, max_ttft_ms=8_100.0)
    (line,) = warmup_notes([before, after], "old", "new")
    assert "old 110 of 400 streams" in line and "66.7 s" in line
    assert "new 36, 8.1 s" in line
    assert warmup_notes([before], "old", "new") == []


def test_the_seed_check_keeps_a_change_within_seed_noise_and_refuses_one_beyond_it() -> None:
    def seeds(before: tuple[float, float], after: tuple[float, float],
              usd: tuple[float, float] = (2.0, 1.9)
              ) -> list[tuple[str, float, int, TokenResult, TokenResult]]:
        return [("s", 1.0, off, row("old", b, usd[0], 500.0), row("new", a, usd[1], 500.0))
                for off, b, a in zip((0, 1000), before, after, strict=True)]

    # new is 0.3 point lower on the mean, the seeds alone move old by 0.6: noise; cheaper
    within = seed_verdict(seeds((0.995, 0.989), (0.990, 0.988)), "old", "new")
    assert "lower within both by more than the seeds' spread in 0" in within
    assert "cheaper on the mean in 1" in within and within.endswith(
        "kept by the rule (nothing lower beyond seed noise, better somewhere).")
    # 0.8 point lower against a 0.2 spread: refused, and the case is named
    beyond = seed_verdict(seeds((0.995, 0.993), (0.987, 0.985)), "old", "new")
    assert "spread in 1 (s ×1 99.40% → 98.60% (seed spread 0.20%))" in beyond
    assert "not kept by the rule" in beyond
    # nothing lower, nothing higher, not cheaper: not better anywhere, not kept
    same = seed_verdict(seeds((0.99, 0.99), (0.99, 0.99), (2.0, 2.0)), "old", "new")
    assert "not kept by the rule" in same
    table = seed_table(seeds((0.995, 0.989), (0.990, 0.988)), "old", "new")
    assert "| s | ×1 | +0, +1000 | 99.50% / 98.90% | 99.00% / 98.80% | 99.20% | 98.90% | 0.60%" \
        in table
