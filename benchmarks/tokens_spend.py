"""Where a token run's money goes by kind of stream (issue 14's diagnosis, beside
``benchmarks.tokens_diag``'s classes and pools).

For one policy's run (simulated servers, ``benchmarks/costsim/tokensim.py``), counted streams
only (after the warm-up), each row is a kind of stream with its share of the run's $ and of
its output tokens, its $ per 1M output tokens and its misses:

- for Switchyard policies: streams moved mid-decode (``placement.stream_move``; their $
  includes the re-prefill), streams chosen as a best effort (nothing predicted to meet both
  objectives: ``placement.streams``' fallback) and the rest (predicted feasible, not moved);
  streams chosen onto a server after it slowed down (the scenario's ``[[slowdowns]]``);
- for every policy: streams by arrival window, split at the scenario's slowdowns, so the $
  per 1M before the first slowdown can be set against the same window of another policy
  (``window_lines``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from benchmarks.costsim.tokens_workload import Streams, TokenScenario
from benchmarks.costsim.tokensim import Outcome

HEADS = ["policy", "streams of kind", "streams", "share of $", "share of output tokens",
         "$/1M out", "misses"]


def _ok(s: TokenScenario, st: Streams, out: Outcome) -> npt.NDArray[np.bool_]:
    ttft_goal = np.array([c.ttft_ms for c in s.classes])[st.klass]
    tpot_goal = np.array([c.tpot_ms for c in s.classes])[st.klass]
    ok: npt.NDArray[np.bool_] = (out.ttft_ms <= ttft_goal) & np.where(
        np.isnan(out.tpot_ms), st.output <= 1, out.tpot_ms <= tpot_goal)
    return ok


def windows(s: TokenScenario, end_s: float) -> list[tuple[float, float]]:
    """Arrival windows from the warm-up's end, split at each slowdown's time."""
    cuts = sorted({ev.at_s for ev in s.slowdowns if s.warmup_s < ev.at_s < end_s})
    edges = [s.warmup_s, *cuts, end_s]
    return list(itertools.pairwise(edges))


def spend_rows(s: TokenScenario, st: Streams, out: Outcome,
               best_effort: npt.NDArray[np.int_],
               name: str) -> list[list[object]]:
    """``name``'s rows (see the module docstring); ``best_effort``: per stream 1 for a best
    effort, 0 predicted feasible, -1 unknown (a baseline: no such rows)."""
    m = st.t_ms >= s.warmup_s * 1000.0
    ok = _ok(s, st, out)
    usd, tokens = float(out.cost_usd[m].sum()), int(st.output[m].sum())
    kinds: list[tuple[str, npt.NDArray[np.bool_]]] = []
    if (best_effort >= 0).any():
        moved = out.moved_to >= 0
        kinds += [("moved mid-decode", moved), ("best effort", best_effort == 1),
                  ("predicted feasible, not moved", (best_effort == 0) & ~moved)]
        for ev in s.slowdowns:
            first = np.array([s.deployments[int(d)].id.startswith(ev.prefix)
                              for d in out.deployment])
            kinds.append((f"chosen onto {ev.prefix} after it slowed ({ev.at_s:g} s)",
                          first & (st.t_ms >= ev.at_s * 1000.0)))
    end_s = float(st.t_ms.max()) / 1000.0 + 1.0 if len(st) else s.warmup_s
    for lo, hi in windows(s, end_s):
        kinds.append((f"arrived {lo:g}-{hi:g} s" if hi < end_s else f"arrived from {lo:g} s",
                      (st.t_ms >= lo * 1000.0) & (st.t_ms < hi * 1000.0)))
    rows: list[list[object]] = []
    for label, kind in kinds:
        k = kind & m
        k_usd, k_tok = float(out.cost_usd[k].sum()), int(st.output[k].sum())
        rows.append([name, label, f"{int(k.sum()):,}", f"{k_usd / usd:.1%}" if usd else "–",
                     f"{k_tok / tokens:.1%}" if tokens else "–",
                     f"{k_usd / k_tok * 1e6:.3f}" if k_tok else "–",
                     f"{int((k & ~ok).sum())}"])
    return rows


def window_lines(scenario: str, rows: Sequence[Sequence[object]], policy: str,
                 against: str = "lowest-latency") -> list[str]:
    """Per arrival window, ``policy``'s $/1M against ``against``'s (from the rows)."""
    def by_window(p: str) -> dict[str, float]:
        return {str(r[1]): float(str(r[5])) for r in rows
                if r[0] == p and str(r[1]).startswith("arrived") and r[5] != "–"}

    mine, theirs = by_window(policy), by_window(against)
    parts = [f"{w.removeprefix('arrived ')} ${mine[w]:.3f} vs ${theirs[w]:.3f} "
             f"({_cheaper(mine[w], theirs[w])})"
             for w in mine if w in theirs and theirs[w] > 0]
    if not parts:
        return []
    return [f"{scenario}, {policy} against {against} by arrival window ($/1M output tokens): "
            + "; ".join(parts) + "."]


def class_lines(scenario: str, classes: Sequence[Sequence[object]], policy: str,
                against: str = "lowest-latency") -> list[str]:
    """Per SLO class, ``policy``'s $/1M against ``against``'s (``tokens_diag``'s class rows:
    policy, class, ..., $/1M in the fifth column)."""
    theirs = {str(r[1]): float(str(r[4])) for r in classes if r[0] == against}
    parts = [f"{r[1]} ${float(str(r[4])):.3f} vs ${theirs[str(r[1])]:.3f} "
             f"({_cheaper(float(str(r[4])), theirs[str(r[1])])})"
             for r in classes if r[0] == policy and theirs.get(str(r[1]), 0) > 0]
    if not parts:
        return []
    return [f"{scenario}, {policy} against {against} by SLO class ($/1M output tokens): "
            + "; ".join(parts) + "."]


def _cheaper(mine: float, theirs: float) -> str:
    saved = 1 - mine / theirs
    return f"{saved:.0%} cheaper" if saved >= 0 else f"{-saved:.0%} dearer"
