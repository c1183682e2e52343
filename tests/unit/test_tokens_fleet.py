"""The simulator's emulated fleet reports (benchmarks/costsim/tokensim.py) and the Switchyard
policy's lagged view of them (benchmarks/costsim/tokens_policies.py): what a server reports,
when a report is handed over, and when an edge may use it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from benchmarks.costsim.tokens_names import REJECTED, make_policy
from benchmarks.costsim.tokens_policies import Switchyard
from benchmarks.costsim.tokens_workload import Streams, TokenScenario
from benchmarks.costsim.tokensim import ServerReport, TokenSim
from tests.unit.test_tokens_sim import scenario, streams


class Reporting:
    """Sends every stream to one deployment and records the reports it is handed."""

    name = "reporting"

    def __init__(self, d: int, every_ms: float) -> None:
        self.d, self.report_every_ms = d, every_ms
        self.reports: list[tuple[float, list[ServerReport]]] = []

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        return self.d

    def first_token(self, sid: int, sim: TokenSim) -> None:
        pass

    def finished(self, sid: int, sim: TokenSim) -> None:
        pass

    def reported(self, now: float, reports: Sequence[ServerReport]) -> None:
        self.reports.append((now, list(reports)))


def test_a_server_reports_its_queue_less_what_its_cache_holds() -> None:
    # three streams at once on the L4 (1 ms a token + 10 ms): the first prefills, two wait
    sim = TokenSim(scenario(), streams([(0.0, 100, 5, -1, 0), (0.0, 300, 5, 7, 200),
                                        (0.0, 50, 5, -1, 0)]))
    policy = Reporting(0, every_ms=50.0)
    sim.run(policy)
    first_at, (l4, h100) = policy.reports[0]
    assert first_at == 50.0  # the first is prefilling (110 ms), the others wait
    assert l4 == ServerReport(waiting_tokens=100 + 300 + 50, waiting_streams=3,
                              running_streams=0)
    assert h100 == ServerReport(0, 0, 0)
    # session 7's prefix is cached once its stream is admitted; a new stream of session 7
    # waiting then would report only its uncached part
    srv = sim.servers[0]
    srv.admit(1, sim.streams, 300)
    srv.waiting.append(1)
    assert srv.report(sim.streams, sim.prompt, 0).waiting_tokens == 100


def test_reports_come_every_interval_and_stop_when_the_streams_are_done() -> None:
    sim = TokenSim(scenario(), streams([(0.0, 100, 11, -1, 0), (1000.0, 100, 11, -1, 0)]))
    policy = Reporting(0, every_ms=250.0)
    out = sim.run(policy)
    times = [t for t, _ in policy.reports]
    assert times == [250.0 * k for k in range(1, len(times) + 1)]
    end = 1000.0 + out.ttft_ms[1] + 10 * out.tpot_ms[1]
    assert times[-1] >= end - 250.0 - 1.0 and times[-1] <= end + 250.0
    assert policy.reports[-1][1][0] == ServerReport(0, 0, 0)


def test_a_policy_without_an_interval_gets_no_reports() -> None:
    policy = Reporting(0, every_ms=0.0)
    TokenSim(scenario(), streams([(0.0, 100, 11, -1, 0)])).run(policy)
    assert policy.reports == []


def test_the_edge_uses_a_report_only_a_push_delay_after_its_sample_less_its_own_share() -> None:
    sim = TokenSim(scenario(), streams([(0.0, 100, 11, -1, 0)]))
    sy = Switchyard(sim, fleet=True, report_every_ms=1000.0, push_delay_ms=250.0)
    assert sy.report_every_ms == 1000.0
    assert Switchyard(sim).report_every_ms == 0.0  # the default edge gets no reports
    l4 = sim.deployments[0].id
    sy.logs[0].record(0.9, {l4: 40})  # this edge's own pending tokens there at the sample
    sy.reported(1000.0, [ServerReport(100, 2, 1), ServerReport(0, 0, 3)])
    sy.logs[0].record(1.1, {l4: 90})  # it sent more since
    assert sy._fleet(0, 1249.0) is None  # not pushed yet
    view = sy._fleet(0, 1250.0)
    assert view is not None
    assert view[l4].waiting_tokens == 100 and view[l4].own_tokens == 40
    assert view[l4].others_tokens == 60
    sy.reported(2000.0, [ServerReport(7, 1, 0), ServerReport(0, 0, 0)])
    assert sy._fleet(0, 2100.0)[l4].waiting_tokens == 100  # type: ignore[index]
    assert sy._fleet(0, 2250.0)[l4].own_tokens == 90  # type: ignore[index]


def two_edges(ttft_ms: float) -> TokenScenario:
    """Two regions' edges sharing one region's cheap L4 and fast H100 (5 ms apart)."""
    return scenario(ttft_ms, 1000.0, max_tokens=5, l4_batch=8, edge_regions=2)


def taught(sim: TokenSim, at_ms: float | None) -> Switchyard:
    """A fleet-view Switchyard whose edge 0 learned both deployments (L4: 1 ms a prompt
    token, H100: 0.1 ms), handed at ``at_ms`` (None: never) a report of 300 tokens queued on
    the L4, none of them edge 0's."""
    sy = Switchyard(sim, fleet=True, report_every_ms=1000.0, push_delay_ms=250.0)
    for d, rate in zip(sim.deployments, (1.0, 0.1), strict=True):
        for _ in range(5):
            sy.stats[0].observe(d.id, prefill_ms=rate * 400, uncached_tokens=400,
                                tpot_ms=20.0, load=0)
    if at_ms is not None:
        sy.reported(at_ms, [ServerReport(300, 1, 0), ServerReport(0, 0, 0)])
    return sy


def test_the_edge_moves_a_stream_off_a_server_other_edges_queued_once_the_report_is_in() -> None:
    # one 400-token stream from edge 0, TTFT ≤ 1000 ms: the L4 predicts ~400 ms ≤ 500 ms
    # (half the objective) alone, ~700 ms with the other edges' 300 tokens ahead of it
    one = Streams(np.array([0.0]), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                  np.array([400]), np.array([5]), np.array([-1]), np.zeros(1, dtype=np.int64),
                  np.ones(1))
    sim = TokenSim(two_edges(ttft_ms=1000.0), one)
    assert taught(sim, None).choose(0, 0, 2000.0, sim) == 0  # no report: the cheap L4
    assert taught(sim, 1000.0).choose(0, 0, 2000.0, sim) == 1  # the report: the H100
    assert taught(sim, 1900.0).choose(0, 0, 2000.0, sim) == 0  # sampled, not yet pushed


@pytest.mark.parametrize("name", REJECTED)
def test_every_rejected_variant_still_serves_every_stream(name: str) -> None:
    n = 60
    st = Streams(np.arange(n) * 200.0, np.arange(n) % 2, np.zeros(n, dtype=np.int64),
                 np.full(n, 300), np.full(n, 8), np.where(np.arange(n) % 3 == 0, 1, -1),
                 np.where(np.arange(n) % 3 == 0, 100, 0), np.ones(n))
    sim = TokenSim(two_edges(ttft_ms=1000.0), st)
    policy = make_policy(name, sim, seed=1)
    out = sim.run(policy)
    assert not np.isnan(out.ttft_ms).any() and np.all(out.deployment >= 0)
    assert isinstance(policy, Switchyard)
    assert policy.report_every_ms > 0 or policy.check_every_ms > 0  # reports or moves
    assert all(not p for p in policy.pending[0].values())  # every first token came back
