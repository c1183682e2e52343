"""What Switchyard's stream choice priced each pool at against what it billed
(benchmarks/tokens_price.py): the columns add up from the run and the priced stream costs,
and the prose is computed from the rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.costsim.tokens_policies import Priced, Switchyard
from benchmarks.costsim.tokens_workload import Streams
from benchmarks.costsim.tokensim import TokenSim
from benchmarks.tokens_price import pool_rows, spread_line
from tests.unit.test_tokens_sim import Fixed, scenario

H100 = 1


def two_edges(output: int) -> Streams:
    """Two streams at t = 0 of 100 prompt tokens, one from each edge region."""
    n = 2
    return Streams(np.zeros(n), np.array([0, 1]), np.zeros(n, dtype=np.int64),
                   np.array([100, 100]), np.array([output, output]), np.full(n, -1),
                   np.zeros(n, dtype=np.int64), np.ones(n))


def test_a_batch_shared_with_another_edge_is_billed_below_its_price() -> None:
    s = scenario(edge_regions=2)
    st = two_edges(11)
    out = TokenSim(s, st).run(Fixed(H100))
    dep = s.deployments[H100]
    usd_ms = dep.usd_per_hour / 3.6e6
    # each edge saw none of its own streams there: priced alone, at the batch-1 TPOT (5 ms)
    priced = {i: Priced(100 * 0.1 * usd_ms, 5.0 * usd_ms, 0) for i in range(2)}
    (row,) = pool_rows(s, st, out, priced)
    assert row[0] == dep.id.rsplit(".", 1)[0]
    assert row[1] == 2
    predicted = 2 * (100 * 0.1 + 10 * 5.0) * usd_ms
    assert float(str(row[2])) == pytest.approx(predicted, abs=1e-4)
    assert float(str(row[3])) == pytest.approx(float(out.cost_usd.sum()), abs=1e-4)
    assert row[7] == "1.00"  # the batch the prices assumed
    billed_batch = float(str(row[8]))
    assert 1.0 < billed_batch < 2.0  # the two decodes overlap for part of their time
    # the prefill's fixed 5 ms is billed, not priced; the decode shared with the other edge
    assert float(str(row[5])) > 1.0
    assert float(str(row[6])) < 1.0
    assert row[9] == "100%"


def test_moved_and_unpriced_streams_are_left_out() -> None:
    s = scenario(edge_regions=2)
    st = two_edges(11)
    out = TokenSim(s, st).run(Fixed(H100))
    usd_ms = s.deployments[H100].usd_per_hour / 3.6e6
    (row,) = pool_rows(s, st, out, {0: Priced(usd_ms, usd_ms, 0)})
    assert row[1] == 1
    moved = dataclasses.replace(out, moved_to=np.array([0, -1]))
    assert pool_rows(s, st, moved, {0: Priced(usd_ms, usd_ms, 0)}) == []


def test_switchyard_records_what_it_priced_each_measured_choice_at() -> None:
    s = scenario()
    st = Streams(np.arange(6) * 400.0, np.zeros(6, dtype=np.int64), np.zeros(6, dtype=np.int64),
                 np.full(6, 100), np.full(6, 11), np.full(6, -1), np.zeros(6, dtype=np.int64),
                 np.ones(6))
    sim = TokenSim(s, st)
    policy = Switchyard(sim)
    sim.run(policy)
    assert policy.priced  # the later streams were chosen on measured deployments
    for sid, p in policy.priced.items():
        assert p.prefill_usd > 0 and p.decode_usd_per_token > 0
        assert p.load == int(sim.out.load_at_start[sid])


def test_prose_is_computed_from_the_rows() -> None:
    rows: list[list[object]] = [
        ["a", 1, "", "", "0.75", "", "", "2.10", "2.24", "60%"],
        ["b", 1, "", "", "0.51", "", "", "4.06", "6.63", "36%"],
        ["c", 1, "", "", "2.00", "", "", "1.00", "1.00", "4%"]]
    assert spread_line("s", rows, "p") == (
        "s, p: over the 2 pools holding ≥ 5 % of the billed $, billed / predicted runs from "
        "0.51 (b, batch priced 4.06, billed 6.63) to 0.75 (a, batch priced 2.10, billed "
        "2.24).")
