"""The cheapest-feasible oracle (benchmarks/costsim/tokens_oracle.py): its emulation of a
server is the simulator's own future of that server when nothing else arrives, and it
sends each stream to the cheapest server that meets it without making another miss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.costsim.tokens_oracle import CheapestFeasibleOracle, Emulated, View, emulate
from benchmarks.costsim.tokensim import TokenSim
from tests.unit.test_tokens_sim import scenario, streams


class Recording(CheapestFeasibleOracle):
    """The oracle, keeping its emulation of every server as the last stream is routed."""

    def __init__(self, sim: TokenSim, last: int) -> None:
        super().__init__(sim, "cheapest-feasible-oracle")
        self.last = last
        self.seen: list[Emulated] = []

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        d = super().choose(sid, edge, now, sim)
        if sid == self.last:
            self.seen = [emulate(sim, k, now, list(self._flight[k]), add=sid)
                         for k in range(len(sim.servers))]
        return d


def test_the_emulation_is_the_simulators_future_when_nothing_arrives_later() -> None:
    s = scenario(ttft_ms=3000.0, tpot_ms=60.0, l4_batch=3)
    rng = np.random.default_rng(7)
    n = 60
    rows = [(float(t), int(p), int(m), int(k) if k < 3 else -1, int(p // 2) if k < 3 else 0)
            for t, p, m, k in zip(np.sort(rng.uniform(0, 3_000, n)),
                                  rng.integers(50, 900, n), rng.integers(2, 80, n),
                                  rng.integers(0, 6, n), strict=True)]
    st = streams(rows)
    sim = TokenSim(s, st)
    oracle = Recording(sim, n - 1)
    out = sim.run(oracle)
    checked = 0
    for d, e in enumerate(oracle.seen):
        for sid, done in e.done.items():
            first = e.first.get(sid, float(out.first_ms[sid]))
            assert first == pytest.approx(float(out.first_ms[sid]))
            if st.output[sid] > 1:
                assert (done - first) / (st.output[sid] - 1) == pytest.approx(
                    float(out.tpot_ms[sid]))
            checked += 1
        if d == int(out.deployment[n - 1]):  # the last stream's bill, as emulated
            usd_ms = sim.deployments[d].usd_per_hour / 3.6e6
            assert (e.prefill_ms + e.share_ms) * usd_ms == pytest.approx(
                float(out.cost_usd[n - 1]))
    assert checked >= 3  # streams still on a server when the last one came


def test_the_cheapest_server_that_meets_the_stream() -> None:
    # the L4 decodes 20 ms × (1 + 0.5 (n − 1)): two streams at 30 ms meet a 35 ms TPOT, a
    # third would take all three to 40 ms; the H100 is ~20× dearer
    s = scenario(ttft_ms=3000.0, tpot_ms=35.0, l4_batch=4)
    st = streams([(0.0, 100, 200, -1, 0), (5.0, 100, 200, -1, 0), (10.0, 100, 200, -1, 0),
                  (8_000.0, 100, 200, -1, 0)])
    sim = TokenSim(s, st)
    oracle = CheapestFeasibleOracle(sim, "cheapest-feasible-oracle")
    out = sim.run(oracle)
    assert list(out.deployment) == [0, 0, 1, 0]  # the last comes once the L4 is free again
    assert np.all(out.tpot_ms <= 35.0) and np.all(out.ttft_ms <= 3000.0)
    assert oracle.infeasible == 0


def test_a_slack_leaves_part_of_the_objective_for_later_arrivals() -> None:
    # alone on the L4 a stream decodes at 20 ms, with one more at 30 ms: a 35 ms objective
    # with 50 % slack (17.5 ms) leaves the L4 to no one
    s = scenario(ttft_ms=3000.0, tpot_ms=35.0, l4_batch=4)
    st = streams([(0.0, 100, 50, -1, 0)])
    sim = TokenSim(s, st)
    out = sim.run(CheapestFeasibleOracle(sim, "x", ttft_slack=0.5, tpot_slack=0.5))
    assert int(out.deployment[0]) == 1
    sim = TokenSim(s, st)
    assert int(sim.run(CheapestFeasibleOracle(sim, "x")).deployment[0]) == 0


def test_a_view_hides_what_an_edge_cannot_see() -> None:
    # two edges; edge 1's stream is decoding on the L4 when edge 0's arrives
    s = scenario(ttft_ms=3000.0, tpot_ms=100.0, edge_regions=2)
    st = streams([(0.0, 100, 200, -1, 0), (1_000.0, 100, 50, -1, 0)])
    st = dataclasses.replace(st, region=np.array([1, 0]))
    sim = TokenSim(s, st)
    seen: dict[str, Emulated] = {}

    class Look(CheapestFeasibleOracle):
        def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
            if sid == 1:
                for name, view in (("all", View()), ("own", View(edge=0)),
                                   ("late", View(edge=0, others_after_ms=500.0)),
                                   ("early", View(edge=0, others_after_ms=2_000.0))):
                    seen[name] = emulate(sim, 0, now, [(now + 0.5, 1)], add=1, view=view)
            return 0

    sim.run(Look(sim, "x"))
    assert 0 in seen["all"].done and 0 not in seen["own"].done
    assert 0 in seen["late"].done and 0 not in seen["early"].done  # routed 1 s ago
    alone, shared = seen["own"], seen["all"]  # the L4 slows with a batch of two
    assert alone.done[1] - alone.first[1] < shared.done[1] - shared.first[1]


@pytest.mark.parametrize("admit", [False, True])
def test_a_server_refuses_what_an_edges_view_cannot_see_and_the_edge_pays_a_round_trip(
        admit: bool) -> None:
    # edge 1's stream holds the L4's one batch slot for 4 s; edge 0 sees only its own streams
    s = scenario(ttft_ms=500.0, tpot_ms=100.0, l4_batch=1, edge_regions=2)
    st = streams([(0.0, 100, 200, -1, 0), (1_000.0, 100, 20, -1, 0)])
    st = dataclasses.replace(st, region=np.array([1, 0]))
    sim = TokenSim(s, st)
    oracle = CheapestFeasibleOracle(sim, "x", own_edge=True, admit=admit)
    out = sim.run(oracle)
    if not admit:  # its view says the L4 is free: it waits there behind the other edge's stream
        assert int(out.deployment[1]) == 0 and out.ttft_ms[1] > 500.0
        return
    rtt = float(sim.rtt[0, 0])
    assert oracle.refused == 1 and int(out.deployment[1]) == 1  # the L4 refused: the H100
    h100 = sim.deployments[1]
    assert out.ttft_ms[1] == pytest.approx(rtt + sim.rtt[0, 1] + h100.prefill_ms(100))
