"""What Switchyard's stream choice priced each pool at, against what the streams were billed.

    python -m benchmarks.tokens_price [--scenario tokens-reclaim] [--quick] [--scale 1]
        [--seed-offset 0] [--policy switchyard]

``placement.streams.choose_stream`` prices a deployment for a stream as its predicted prefill
plus ``max_tokens`` × its TPOT predicted at this edge's load there, shared over that load + 1
(the edge sees only its own streams). The simulator (``benchmarks/costsim/tokensim.py``,
emulated servers) bills the prefill as served and each decode's share of the server's true
batch, every edge's streams in it (``∫ dt / n``). Per pool, over the counted streams that
were not moved and were chosen on a measured deployment (``tokens_policies.Priced``): the
prediction scaled to the tokens the stream did output (prefill + (output − 1) × the
predicted share per token), the bill, their ratio, the batch the prediction assumed
(this edge's load + 1, per output token) and the batch the bill shows (the decode's
duration over its billed share, per output token). A ratio under 1: the choice priced the
pool dearer than its streams were billed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from benchmarks.common import md_table
from benchmarks.costsim.tokens_names import POLICIES, REJECTED, VARIANTS, make_policy
from benchmarks.costsim.tokens_policies import Priced, Switchyard
from benchmarks.costsim.tokens_workload import Streams, TokenScenario
from benchmarks.costsim.tokensim import Outcome, TokenSim

HEADS = ["pool", "streams", "predicted $", "billed $", "billed / predicted",
         "prefill billed / predicted", "decode billed / predicted", "batch priced",
         "batch billed", "share of billed $"]


def pool_rows(s: TokenScenario, st: Streams, out: Outcome, priced_by: Mapping[int, Priced]
              ) -> list[list[object]]:
    """One row per pool (see the module docstring), dearest first; ``priced_by``: per stream,
    what the choice priced it at (``Switchyard.priced``)."""
    sums: dict[str, npt.NDArray[np.float64]] = defaultdict(lambda: np.zeros(9))
    counted = (st.t_ms >= s.warmup_s * 1000.0) & (out.moved_to < 0)
    for sid in np.nonzero(counted)[0]:
        priced = priced_by.get(int(sid))
        if priced is None:
            continue
        dep = s.deployments[int(out.deployment[sid])]
        decoded = int(st.output[sid]) - 1
        billed_decode = float(out.cost_usd[sid]) - float(out.prefill_usd[sid])
        share_ms = billed_decode / (dep.usd_per_hour / 3.6e6)
        duration_ms = float(out.tpot_ms[sid]) * decoded if decoded > 0 else 0.0
        sums[dep.id.rsplit(".", 1)[0]] += [
            1, priced.prefill_usd, float(out.prefill_usd[sid]),
            priced.decode_usd_per_token * decoded, billed_decode,
            (priced.load + 1) * decoded, duration_ms, share_ms, decoded]
    total = sum(a[2] + a[4] for a in sums.values())
    rows = []
    for pool, a in sorted(sums.items(), key=lambda kv: -(kv[1][2] + kv[1][4])):
        rows.append([pool, int(a[0]), f"{a[1] + a[3]:.4f}", f"{a[2] + a[4]:.4f}",
                     _ratio(a[2] + a[4], a[1] + a[3]), _ratio(a[2], a[1]), _ratio(a[4], a[3]),
                     _ratio(a[5], a[8]),
                     _ratio(a[6], a[7]), f"{(a[2] + a[4]) / total:.0%}" if total else "–"])
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "–"


def spread_line(scenario: str, rows: list[list[object]], policy: str) -> str:
    """The range of billed / predicted over the pools holding ≥ 5 % of the $ (from rows)."""
    big = [r for r in rows if str(r[9]).endswith("%") and int(str(r[9])[:-1]) >= 5]
    if not big:
        return f"{scenario}, {policy}: no pool holds 5 % of the $."
    lo = min(big, key=lambda r: float(str(r[4])))
    hi = max(big, key=lambda r: float(str(r[4])))
    return (f"{scenario}, {policy}: over the {len(big)} pools holding ≥ 5 % of the billed $, "
            f"billed / predicted runs from {lo[4]} ({lo[0]}, batch priced {lo[7]}, billed "
            f"{lo[8]}) to {hi[4]} ({hi[0]}, batch priced {hi[7]}, billed {hi[8]}).")


def main() -> None:
    from benchmarks.tokens import scaled
    from benchmarks.tokens_diag import _scenario

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="tokens-reclaim")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--policy", default="switchyard",
                    choices=[p for p in POLICIES + VARIANTS + REJECTED
                             if p.startswith("switchyard")])
    args = ap.parse_args()
    s = _scenario(args.scenario)
    s = dataclasses.replace(scaled(s, args.scale), seed=s.seed + args.seed_offset)
    from benchmarks.costsim.tokens_workload import generate_streams

    st = generate_streams(s, args.quick)
    sim = TokenSim(s, st)
    policy = make_policy(args.policy, sim, s.seed)
    assert isinstance(policy, Switchyard)
    out = sim.run(policy)
    rows = pool_rows(s, st, out, policy.priced)
    print(f"{s.name} ×{args.scale:g} seed +{args.seed_offset} "
          f"({'quick' if args.quick else 'full'} horizon), {args.policy}")
    print(md_table(HEADS, rows))
    print(spread_line(s.name, rows, args.policy))


if __name__ == "__main__":
    main()
