"""The cost simulator's ``envoy`` row: choices from the pushed order and Envoy's own rules."""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import pytest

from benchmarks.costsim import policies
from benchmarks.costsim.control import ControlPlane
from benchmarks.costsim.envoy_policy import EnvoyPolicy, EnvoyRules, envoy
from benchmarks.costsim.policies import Attempt
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import CallClass, Scenario, load_scenario
from placement.model import Candidate
from placement.registry import build_profile
from services.xds.clusters import retry_concurrency
from services.xds.order import failover_order
from services.xds.resources import EnvoySettings

SMALL = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios" / "small.toml"
EDGE = "aws-us-east-1"
MODEL = "summarize"
KLASS = CallClass(MODEL, 0, 1.0, 300.0, 0.0)
RULES = EnvoyRules.compiled(EnvoySettings())


def cand(dep: str, cost: float, latency: float = 100.0) -> Candidate:
    backend, variant = dep.split("/", 1)
    return Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"{backend}.test:8001",
        variant=variant, region=EDGE, cloud="aws", accelerator="nvidia-t4", quality=0.8,
        latency_p95_ms=latency, rtt_ms=5.0, queue_ms=0.0, compute_ms=50.0, cost_usd=cost,
        spare_capacity=100.0, concurrency=1, edge_slots=1.0, observed=True)


A = cand("a/summarize-small", 1e-5)
B = cand("b/summarize-small", 2e-5)
C = cand("c/summarize-small", 9e-5, latency=20.0)


@pytest.fixture
def scenario() -> Scenario:
    return load_scenario(SMALL)


@pytest.fixture
def control(scenario: Scenario) -> ControlPlane:
    return ControlPlane(scenario.catalog(), scenario.prices(), sorted(scenario.regions))


def push(control: ControlPlane, *cands: Candidate) -> None:
    """What ``ControlPlane.rebuild`` does: a new table object per (model, edge), one more
    build (the Envoy row's hub then pushes the rows that changed materially)."""
    control.tables[(MODEL, EDGE)] = list(cands)
    control.builds += 1


def policy(control: ControlPlane, **rules: int) -> EnvoyPolicy:
    return EnvoyPolicy(control, build_profile("cheapest"), dataclasses.replace(RULES, **rules),
                       slo_margin_ms=2.0)


def attempt(now: float = 0.0, exclude: frozenset[str] = frozenset(),
            klass: CallClass = KLASS) -> Attempt:
    return Attempt(EDGE, klass, exclude, frozenset(), now)


def test_rules_are_read_from_the_compiled_resources() -> None:
    r = EnvoyRules.compiled(EnvoySettings(max_attempts=5, eject_consecutive_failures=7,
                                          eject_base_s=2.5))
    assert (r.max_attempts, r.eject_after, r.eject_base_s) == (5, 7, 2.5)
    # resources.py retries refused connections and resets, and a full queue's answer
    # (RESOURCE_EXHAUSTED, as the attempt policy does)
    assert r.retried == frozenset({"unavailable", "exhausted"})
    # no circuit breakers pushed: Envoy's defaults
    assert (r.max_requests, r.max_retries) == (1024, 3)


def test_follows_the_pushed_order(control: ControlPlane) -> None:
    push(control, C, B, A)
    p = policy(control)
    expected = tuple(c.deployment_id for c in failover_order(
        [C, B, A], build_profile("cheapest"), 300, 2.0))
    assert p.order(MODEL, EDGE, 300.0, 0.0) == expected
    assert expected[0] == A.deployment_id
    assert p.choose(attempt()) == A.deployment_id
    # the next push drops a (its backend went down): calls follow it, cheapest first
    push(control, C, B, dataclasses.replace(A, dropped_reason="backend down"))
    assert p.choose(attempt()) == B.deployment_id


def test_slo_is_matched_in_whole_ms(control: ControlPlane) -> None:
    """The listener's Lua rounds the SLO down: 22.9 ms is class 22, a 20 ms budget with the
    2 ms margin, where c's 20.5 ms p95 does not fit and only the pricier, faster d does."""
    c = cand("c/summarize-small", 9e-5, latency=20.5)
    d = cand("d/summarize-small", 2e-4, latency=15.0)
    push(control, A, c, d)
    p = policy(control)
    assert p.order(MODEL, EDGE, 22.9, 0.0)[0] == d.deployment_id
    assert p.order(MODEL, EDGE, 23.0, 0.0)[0] == c.deployment_id


def test_does_not_see_its_calls_in_flight_between_pushes(control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    per_call = policies.switchyard(control, seed=1, band=0.05, margin_ms=2.0)
    klass = CallClass(MODEL, 0, 1.0, 150.0, 0.0)
    envoy_choices = [p.choose(attempt(klass=klass)) for _ in range(20)]
    per_call_choices = [per_call.choose(attempt(klass=klass)) for _ in range(20)]
    # one slot on a: the per-call policy expects to queue past it and spills to b ...
    assert B.deployment_id in per_call_choices
    # ... Envoy keeps sending a everything until the next push says otherwise
    assert envoy_choices == [A.deployment_id] * 20
    push(control, dataclasses.replace(A, spare_capacity=0.0), B)
    assert p.choose(attempt(klass=klass)) == B.deployment_id


def test_a_full_cluster_fails_the_call_rather_than_overflowing(control: ControlPlane) -> None:
    """Envoy never retries an overflow and its aggregate picks children by health only."""
    push(control, A, B)
    p = policy(control, max_requests=2)
    assert [p.choose(attempt()) for _ in range(2)] == [A.deployment_id] * 2
    assert p.choose(attempt()) is None
    assert p.overflows == 1
    p.result(attempt(), A.deployment_id, 50.0, "ok", 0.1)
    assert p.choose(attempt()) == A.deployment_id


def test_what_if_breakers_follow_the_slot_share_of_each_push(control: ControlPlane) -> None:
    push(control, dataclasses.replace(A, edge_slots=1.6), B)
    p = EnvoyPolicy(control, build_profile("cheapest"),
                    dataclasses.replace(RULES, breakers_from_shares=True), 2.0)
    assert [p.choose(attempt()) for _ in range(3)] == [A.deployment_id] * 2 + [None]
    push(control, dataclasses.replace(A, edge_slots=3.0), B)
    assert p.choose(attempt()) == A.deployment_id
    assert p.choose(attempt()) is None
    assert p.overflows == 2


def test_an_ejected_child_is_skipped_until_its_time_is_up(control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    for t in (1.0, 1.1):
        p.result(attempt(t), A.deployment_id, 0.0, "unavailable", t)
    assert p.choose(attempt(1.2)) == A.deployment_id  # two in a row: not yet
    p.result(attempt(1.2), A.deployment_id, 0.0, "unavailable", 1.3)
    assert p.choose(attempt(1.4)) == B.deployment_id
    assert p.ejections == 1
    assert p.choose(attempt(1.3 + RULES.eject_base_s)) == A.deployment_id
    # ejected again at once: twice the base time
    for t in (7.0, 7.1, 7.2):
        p.result(attempt(t), A.deployment_id, 0.0, "unavailable", t)
    assert p.choose(attempt(7.2 + RULES.eject_base_s + 0.1)) == B.deployment_id
    assert p.choose(attempt(7.2 + 2 * RULES.eject_base_s)) == A.deployment_id


def test_a_success_or_a_full_queue_resets_the_run(control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    for i, status in enumerate(["unavailable", "unavailable", "exhausted", "unavailable",
                                "unavailable", "ok", "unavailable", "unavailable"]):
        p.result(attempt(), A.deployment_id, 0.0, status, float(i))
    assert p.ejections == 0
    assert p.choose(attempt(9.0)) == A.deployment_id


def test_a_retry_goes_to_the_next_child_not_yet_attempted(control: ControlPlane) -> None:
    push(control, A, B, C)
    p = policy(control)
    p.result(attempt(), A.deployment_id, 0.0, "unavailable", 0.1)
    assert p.choose(attempt(0.1, frozenset({A.deployment_id}))) == B.deployment_id
    assert p.choose(attempt(0.1, frozenset({A.deployment_id, B.deployment_id}))) \
        == C.deployment_id


def test_resource_exhausted_is_retried_at_the_next_child(control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    p.choose(attempt())
    p.result(attempt(), A.deployment_id, 0.0, "exhausted", 0.1)
    assert p.choose(attempt(0.1, frozenset({A.deployment_id}))) == B.deployment_id
    assert p.not_retried == 0


def test_a_status_outside_retry_on_is_not_retried(control: ControlPlane) -> None:
    push(control, A, B)
    p = EnvoyPolicy(control, build_profile("cheapest"),
                    dataclasses.replace(RULES, retried=frozenset({"unavailable"})),
                    slo_margin_ms=2.0)  # resources.py before it retried a full queue
    p.choose(attempt())
    p.result(attempt(), A.deployment_id, 0.0, "exhausted", 0.1)
    assert p.choose(attempt(0.1, frozenset({A.deployment_id}))) is None
    assert p.not_retried == 1
    assert p.choose(attempt(0.2)) == A.deployment_id  # a new call is not affected


def test_parallel_retries_past_max_retries_are_not_made(control: ControlPlane) -> None:
    push(control, A, B, C)
    p = policy(control, max_retries=1, min_retry_concurrency=0)
    p.rules = dataclasses.replace(p.rules, retry_budget_percent=0.0)
    retry = attempt(0.1, frozenset({A.deployment_id}))
    assert p.choose(retry) == B.deployment_id
    assert p.choose(retry) is None
    assert p.retry_overflows == 1
    p.result(retry, B.deployment_id, 40.0, "ok", 0.2)
    assert p.choose(retry) == B.deployment_id


def test_an_aggregate_counts_no_requests_so_its_floor_is_the_budget(
        control: ControlPlane) -> None:
    """resources.py sets a retry budget on each aggregate (20 %, at least 10 in flight),
    which Envoy applies instead of max_retries; the aggregate's requests are its children's,
    so 20 % of them is 0 and, with nothing planned through it, the floor holds however many
    calls are in flight."""
    assert (RULES.retry_budget_percent, RULES.min_retry_concurrency) == (20.0, 10)
    push(control, A, B, C)
    p = policy(control)
    for _ in range(200):  # 200 first attempts in flight
        p.choose(attempt(0.1))
    retry = attempt(0.1, frozenset({A.deployment_id}))
    assert [p.choose(retry) for _ in range(11)] == [B.deployment_id] * 10 + [None]
    assert p.retry_overflows == 1
    p.result(retry, B.deployment_id, 40.0, "ok", 0.2)  # a retry's answer frees its hold
    assert p.choose(retry) == B.deployment_id


def test_a_planned_rate_sizes_its_aggregates_retry_budget(control: ControlPlane) -> None:
    """With a learned rate the plan puts rate × 1.25 × p95 calls in flight through the
    class's aggregate, and its budget is ``clusters.retry_concurrency`` of that: every call
    in flight on a backend that dies may be retried at once."""
    slow = dataclasses.replace(A, latency_p95_ms=250.0, compute_ms=5.0, concurrency=64,
                               edge_slots=0.0)
    push(control, slow, B)
    p = policy(control)
    _rate(p, 1000, 0.0, 4.9)  # ~200 calls/s
    routes = p.route(EDGE, KLASS, 5.0)
    m = p.edges[EDGE].models[MODEL]
    planned = m.inflight[routes.index]
    assert list(planned) == [None] and routes.rotations == ()
    assert planned[None] > 50  # ~200/s x 1.25 x 0.25 s
    cap = p._retry_cap(p.edges[EDGE], (MODEL, routes.index, None))
    assert cap >= planned[None] * 1.2 and cap == retry_concurrency(planned[None], 20.0, 10)
    for _ in range(int(planned[None])):  # the planned calls in flight, all on a
        assert p.choose(attempt(5.0)) == slow.deployment_id
    retry = attempt(5.0, frozenset({slow.deployment_id}))
    got = [p.choose(retry) for _ in range(int(planned[None]))]  # a dies: every one retried
    assert got == [B.deployment_id] * int(planned[None])
    assert p.retry_overflows == 0


def test_each_rotation_has_its_own_retry_budget(control: ControlPlane) -> None:
    """A split class's calls go through one aggregate per rotation, each with its own
    breakers: a retry is counted against the aggregate its call was routed through."""
    a = dataclasses.replace(A, compute_ms=50.0, concurrency=1, edge_slots=0.0)
    b = dataclasses.replace(B, concurrency=8, edge_slots=0.0)
    push(control, a, b, C)
    p = policy(control, min_retry_concurrency=1)
    _rate(p, 290, 0.0, 4.9)
    routes = p.route(EDGE, KLASS, 5.0)
    assert {o[0] for _, o in routes.rotations} == {A.deployment_id, B.deployment_id}
    firsts: dict[str, str] = {}
    while len(firsts) < 2:  # one call through each rotation
        dep = p.choose(attempt(5.0))
        assert dep is not None
        firsts.setdefault(dep, dep)
    edge = p.edges[EDGE]
    caps = {d: p._retry_cap(edge, (MODEL, routes.index, d)) for d in firsts}
    assert all(c >= 1 for c in caps.values())
    # both fail; each one's retry holds its own rotation's budget
    for dep in firsts:
        p.result(attempt(5.0), dep, 0.0, "unavailable", 5.01)
        assert p.choose(attempt(5.01, frozenset({dep}))) is not None
    assert sorted(edge.retries.values()) == [1, 1]
    assert {k[2] for k in edge.retries} == set(firsts)


def test_nothing_healthy_in_the_order_fails_the_call(control: ControlPlane) -> None:
    push(control, dataclasses.replace(A, dropped_reason="backend down"))
    p = policy(control)
    assert p.choose(attempt()) is None
    assert p.no_healthy == 1


def test_feedback_is_the_access_log_one_entry_per_answered_call(
        control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    p.result(attempt(), A.deployment_id, 0.0, "unavailable", 0.1)  # refused: not logged
    p.result(attempt(), B.deployment_id, 42.0, "ok", 0.2)
    logged = control.edges[EDGE].refresh()
    assert set(logged) == {B.deployment_id}


class FakeSlowPath:
    """Stands in for the co-located Python edge: records what it was asked."""

    name = "fake-slow-path"
    control: ControlPlane | None = None

    def __init__(self) -> None:
        self.chosen: list[Attempt] = []
        self.results: list[str] = []

    def choose(self, a: Attempt) -> str | None:
        self.chosen.append(a)
        return "slow/variant"

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        self.results.append(status)


def test_a_quality_floor_takes_the_slow_path(control: ControlPlane) -> None:
    push(control, A, B)
    slow = FakeSlowPath()
    p = EnvoyPolicy(control, build_profile("cheapest"), RULES, 2.0, slow)
    floor = CallClass(MODEL, 1, 0.3, 200.0, 0.85)
    assert p.choose(attempt(klass=floor)) == "slow/variant"
    p.result(attempt(klass=floor), "slow/variant", 10.0, "ok", 0.1)
    assert p.choose(attempt()) == A.deployment_id
    assert (len(slow.chosen), slow.results, p.slow_calls) == (1, ["ok"], 1)


def test_the_row_is_registered_and_builds_from_a_scenario(scenario: Scenario) -> None:
    p = make_policy("envoy", scenario)
    assert isinstance(p, EnvoyPolicy) and p.name == "envoy"
    assert p.slow_path is not None
    direct = envoy(ControlPlane(scenario.catalog(), scenario.prices(), ["x"]), 0, 0.05, 2.0, 3)
    assert direct.rules.max_attempts == 3


def test_the_fidelity_target_is_one_point_below_and_five_percent_above() -> None:
    from benchmarks.envoy_fidelity import COUNTERS, Run, meets, notes, tables

    def run(variant: str, attained: float, cost: float, seed: int = 1) -> Run:
        return Run("s", seed, variant, 1000, 0, 1000, attained, cost,
                   dict.fromkeys(COUNTERS, 0))

    base = run("switchyard", 0.99, 10.0)
    assert meets(base, run("envoy", 0.9801, 10.49))
    assert meets(base, run("envoy", 1.0, 8.0))  # better and cheaper
    assert not meets(base, run("envoy", 0.9799, 10.0))
    assert not meets(base, run("envoy", 0.99, 10.51))
    results = [[base, run("envoy", 0.97, 10.0), run("envoy-compiled", 0.99, 9.0)],
               [run("switchyard", 0.99, 10.0, 2), run("envoy", 0.99, 10.0, 2),
                run("envoy-compiled", 0.99, 9.0, 2)]]
    text = notes(results, True)
    # a scenario counts as met only when every seed meets it
    assert ("slow path): 1 of 2 scenario/seed runs; on every seed 0 of 1 scenarios (none); "
            "attainment -2.00") in text[0]
    assert ("no slow path): 2 of 2 scenario/seed runs; on every seed 1 of 1 scenarios (s); "
            "attainment +0.00") in text[0]
    main_t, _, _ = tables(results)
    assert "| s | 2 | envoy | 1,000 | 99.00% | +0.00 | 10.00 | 1.000 | yes |" in main_t


def test_the_cold_start_misses_are_counted_and_shown() -> None:
    """A missed call counts as the cold start's when it arrived before ``EARLY_S`` (the
    day's first seconds, before any edge learned a rate), and the miss table shows it."""
    from benchmarks.envoy_fidelity import COUNTERS, EARLY_S, Run, early, tables

    arrivals = [0.0, 1.5, EARLY_S - 0.001, EARLY_S, 60.0]
    assert early([0, 2, 3, 4], arrivals) == 2  # 1.5 s was not missed; 10 s is not early
    assert early([], arrivals) == 0
    assert early([1, 4], arrivals, within_s=61.0) == 2
    sw = Run("s", 1, "switchyard", 100, 0, 100, 0.99, 1.0, dict.fromkeys(COUNTERS, 0),
             {"queueing not foreseen": 1}, 0, 0)
    env = Run("s", 1, "envoy", 100, 0, 100, 0.95, 1.0, dict.fromkeys(COUNTERS, 0),
              {"estimate before first samples": 5}, 0, 4)
    _, _, miss_t = tables([[sw, env]])
    assert f"missed, arrived in the first {EARLY_S:g} s |" in miss_t.splitlines()[0]
    assert miss_t.splitlines()[-1].endswith("| 4 |")
    assert miss_t.splitlines()[-2].endswith("| 0 |")


def test_rows_without_base_run_only_the_rows_named(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--rows envoy --without-base``: the envoy row alone (no switchyard run), as a table
    with the command that produced it; nothing written into RESULTS.md."""
    import benchmarks.envoy_fidelity as fidelity

    jobs: list[tuple[str, bool, str, int]] = []

    def fake_run(paths: list[object], quick: bool, variants: tuple[str, ...],
                 workers: int = 2, seeds: int = 1) -> list[list[object]]:
        jobs.extend((str(p), quick, v, k) for p in paths for k in range(seeds)
                    for v in variants)
        return [[fidelity.Run("small", 11 + k, v, 100, 0, 100, 0.99, 4.0, {},
                              {"queueing not foreseen": 1})
                 for v in variants] for _ in paths for k in range(seeds)]

    monkeypatch.setattr(fidelity, "run", fake_run)
    monkeypatch.setattr(fidelity, "write_section", lambda *a: pytest.fail("wrote RESULTS"))
    monkeypatch.setattr(sys, "argv", ["envoy_fidelity", "--quick", "--scenario", "small",
                                      "--seeds", "2", "--rows", "envoy", "--without-base"])
    fidelity.main()
    out = capsys.readouterr().out
    assert {v for _, _, v, _ in jobs} == {"envoy"} and len(jobs) == 2
    assert ("python -m benchmarks.envoy_fidelity --quick --seeds 2 --scenario small "
            "--rows envoy --without-base") in out
    assert "| small | 12 | envoy | 100 | 99.00% | 4.00 | 1 |" in out
    assert "switchyard" not in out


def _rate(p: EnvoyPolicy, n: int, t0: float, t1: float, klass: CallClass = KLASS) -> None:
    """``n`` calls of ``klass`` spread over [t0, t1), each answered at once (the access log
    sees them; no call stays in flight)."""
    for i in range(n):
        now = t0 + (t1 - t0) * i / n
        dep = p.choose(attempt(now, klass=klass))
        assert dep is not None
        p.result(attempt(now, klass=klass), dep, 60.0, "ok", now)


def test_weights_follow_the_class_rate_of_the_last_push_only(control: ControlPlane) -> None:
    """One slot of 50 ms on a carries at most 20 calls/s; past that, placement's next compile
    splits the class over a and b (8 slots). As the live xDS server, placement recompiles on
    a new hub version (a row that changed materially) and ``learn_every_s`` (5 s) after the
    last compile while it learned something: until then Envoy keeps the order, however many
    calls it has in flight (it counts none)."""
    a = dataclasses.replace(A, compute_ms=50.0, concurrency=1, edge_slots=0.0)
    b = dataclasses.replace(B, concurrency=8, edge_slots=0.0)
    push(control, a, b)
    p = policy(control)
    assert [p.choose(attempt(0.0)) for _ in range(30)] == [A.deployment_id] * 30
    _rate(p, 290, 0.0, 4.9)  # ~60 calls/s of the class, all on a
    push(control, a, b)  # a rebuild with nothing material: no new hub version, no compile
    assert p.route(EDGE, KLASS, 4.95).rotations == ()
    assert p.split_calls == 0
    routes = p.route(EDGE, KLASS, 5.0)  # 5 s after the last compile: the rate is learned
    heads = {order[0]: w for w, order in routes.rotations}
    assert set(heads) == {A.deployment_id, B.deployment_id}
    assert heads[A.deployment_id] < 0.5
    chosen = [p.choose(attempt(5.0)) for _ in range(400)]
    share_b = chosen.count(B.deployment_id) / len(chosen)
    assert abs(share_b - heads[B.deployment_id]) < 0.1
    assert p.split_calls == chosen.count(B.deployment_id)
    # a retry in any rotation goes to the first of the order not yet tried
    assert p.choose(attempt(5.0, frozenset({B.deployment_id}))) == A.deployment_id


def test_without_split_the_order_alone_is_pushed(control: ControlPlane) -> None:
    push(control, dataclasses.replace(A, compute_ms=50.0, concurrency=1), B)
    p = EnvoyPolicy(control, build_profile("cheapest"), RULES, 2.0, split=False,
                    learn_margins=False)
    _rate(p, 600, 0.0, 10.0)
    push(control, dataclasses.replace(A, compute_ms=50.0, concurrency=1), B)
    assert p.route(EDGE, KLASS, 10.0).rotations == ()
    assert {p.choose(attempt(10.0)) for _ in range(50)} == {A.deployment_id}


def test_learned_margins_move_the_class_at_the_next_push(control: ControlPlane) -> None:
    push(control, A, B)
    p = policy(control)
    assert p.choose(attempt(0.0)) == A.deployment_id
    loose = CallClass(MODEL, 2, 0.2, 1000.0, 0.0)  # SLO 1 s: the same range of SLOs
    assert p.choose(attempt(0.0, klass=loose)) == A.deployment_id
    for i in range(3):  # three calls of the class served late on a (SLO 300 ms)
        p.result(attempt(0.1), A.deployment_id, 400.0, "ok", 0.1 + i * 0.01)
    assert p.choose(attempt(0.2)) == A.deployment_id  # not before the next compile
    push(control, A, B)  # nothing material: no new hub version
    assert p.choose(attempt(0.3)) == A.deployment_id
    # 5 s after the last compile (learn_every_s) placement recompiles with what it learned
    assert p.choose(attempt(5.0)) == B.deployment_id
    assert p.order(MODEL, EDGE, 300.0, 0.0, 5.0)[0] == B.deployment_id
    # the loose class learned nothing: its range is cut at its SLO, and it keeps a
    assert p.choose(attempt(5.0, klass=loose)) == A.deployment_id
    assert len(p.edges[EDGE].models[MODEL].classes) > 1


def test_a_material_row_change_recompiles_at_once(control: ControlPlane) -> None:
    """A new hub version (a row that changed past its noise band) is compiled at once; an
    estimate inside the band is not pushed at all (``bands.material``)."""
    push(control, A, B)
    p = policy(control)
    assert p.choose(attempt(0.0)) == A.deployment_id
    pushes = p.pushes
    push(control, dataclasses.replace(A, latency_p95_ms=A.latency_p95_ms * 1.01), B)
    assert p.choose(attempt(0.1)) == A.deployment_id and p.pushes == pushes
    push(control, dataclasses.replace(A, dropped_reason="backend down"), B)
    assert p.choose(attempt(0.2)) == B.deployment_id and p.pushes == pushes + 1
