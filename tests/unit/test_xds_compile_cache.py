"""The incremental compile (``resources.CompileCache``) builds exactly what a compile from
scratch builds: on random tables, over a run of changes, byte for byte; and it rebuilds only
the resources whose inputs changed."""

from __future__ import annotations

import random

import pytest

from placement.edge_learning import Learned
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds import resources
from services.xds.clusters import deployment_cluster, model_cluster
from services.xds.plan import Table, plan_region
from services.xds.resources import (
    CompileCache,
    EnvoySettings,
    RegionConfig,
    cluster_name,
    compile_region,
    model_cluster_name,
    resource,
    retry_budgets,
    route_config_name,
)
from services.xds.routes import rotation_cluster_name, route_configuration

PROFILE = build_profile("cheapest", 0.05)
SETTINGS = [EnvoySettings(), EnvoySettings(eject_base_s=7.0, tls=True, max_attempts=2)]


def straightforward(region: str, tables: list[placement_pb2.RouteTable], s: EnvoySettings,
                    learned: Learned | None = None) -> RegionConfig:
    """The compile as it was before the cache: every resource built from its dict (the
    deployment clusters of what an order reaches and of the rows no call may use)."""
    models = plan_region({t.model: Table([candidate_from_pb(c) for c in t.candidates],
                                         t.default_slo_ms) for t in tables},
                         PROFILE, s.slo_margin_ms, learned, cap=s.cap)
    aggregates = {}
    budgets = retry_budgets(models, s)
    for model, m in models.items():
        named = [(model_cluster_name(model), m.default),
                 *((model_cluster_name(model, i), k.order) for i, k in enumerate(m.classes)),
                 *((rotation_cluster_name(model, i, order[0]), order)
                   for i, rots in m.rotations.items() for _, order in rots)]
        for name, order in named:
            if order:
                aggregates[name] = resource(name, model_cluster(name, order, s,
                                                                budgets.get(name)))
    reached = {cluster_name(d) for m in models.values()
               for d in [*m.default, *(d for k in m.classes for d in k.order),
                         *(d for rots in m.rotations.values() for _, o in rots for d in o)]}
    clusters = {}
    for t in tables:
        for c in t.candidates:
            name = cluster_name(c.deployment_id)
            if name not in clusters and (name in reached or c.dropped_reason):
                clusters[name] = resource(name, deployment_cluster(c, s))
    clusters.update(aggregates)
    rc = route_config_name(region)
    return RegionConfig(region, clusters,
                        {rc: resource(rc, route_configuration(region, models, s))}, models)


def _row(rng: random.Random, i: int, model: str) -> placement_pb2.Candidate:
    backend = f"b{i}"
    variant = rng.choice([f"{model}-small", f"{model}-large"])
    host = rng.choice([f"10.0.{i // 250}.{i % 250}", f"node-{i}.example", "::1"])
    return placement_pb2.Candidate(
        deployment_id=f"{backend}/{variant}", backend_id=backend,
        endpoint=f"{host}:{rng.randrange(1, 65536)}", variant=variant,
        region=rng.choice(["r-east", "r-west", ""]), cloud="aws", quality=0.9,
        latency_p95_ms=rng.uniform(5, 400), cost_usd=rng.uniform(1e-7, 1e-5),
        spare_capacity=rng.choice([0.0, 5.0, 50.0]), concurrency=rng.choice([1, 4]),
        dropped_reason=rng.choice(["", "", "", "drained"]))


def _tables(rng: random.Random, rows: dict[str, list[placement_pb2.Candidate]]
            ) -> list[placement_pb2.RouteTable]:
    return [placement_pb2.RouteTable(model=m, edge_region="r-east", default_slo_ms=300,
                                     candidates=cands) for m, cands in sorted(rows.items())]


def _mutate(rng: random.Random, rows: dict[str, list[placement_pb2.Candidate]]) -> None:
    """A placement change: a row's estimate, price, state, endpoint or variant moves, a row
    goes or a new one comes."""
    model = rng.choice(sorted(rows))
    cands = rows[model]
    for _ in range(rng.randrange(1, 4)):
        c = rng.choice(cands)
        what = rng.randrange(6)
        if what == 0:
            c.latency_p95_ms = rng.uniform(5, 400)
        elif what == 1:
            c.cost_usd = rng.uniform(1e-7, 1e-5)
        elif what == 2:
            c.dropped_reason = "" if c.dropped_reason else "Triton server not ready"
        elif what == 3:
            c.endpoint = f"10.9.9.{rng.randrange(250)}:{rng.randrange(1, 65536)}"
        elif what == 4:
            c.region = rng.choice(["r-east", "r-west"])
        elif len(cands) > 2:
            cands.remove(c)
    if rng.random() < 0.3:
        cands.append(_row(rng, rng.randrange(1000, 2000), model))


def _wire(rc: RegionConfig) -> dict[str, tuple[str, bytes]]:
    return {n: (r.version, r.message.SerializeToString(deterministic=True))
            for n, r in {**rc.clusters, **rc.routes}.items()}


@pytest.mark.parametrize("seed", range(6))
def test_the_incremental_compile_equals_a_compile_from_scratch_on_random_tables(
        seed: int) -> None:
    rng = random.Random(seed)
    s = SETTINGS[seed % len(SETTINGS)]
    rows = {m: [_row(rng, i, m) for i in range(rng.randrange(3, 25))]
            for m in ("summarize", "generate")[:1 + seed % 2]}
    cache = CompileCache()
    for step in range(12):
        tables = _tables(rng, rows)
        some = rng.choice(rows[sorted(rows)[0]]).deployment_id
        learned = None if step % 3 else Learned(
            rates={("summarize", None): rng.uniform(0, 50), ("summarize", 150): 3.0},
            margins={("summarize", None): {some: rng.uniform(0, 80)},
                     ("summarize", 150): {some: 30.0}})
        got = compile_region("r-east", tables, PROFILE, s, learned, cache)
        want = straightforward("r-east", tables, s, learned)
        assert _wire(got) == _wire(want), f"seed {seed}, step {step}"
        assert list(got.clusters) == list(want.clusters)  # same order, too
        assert got.models == want.models
        _mutate(rng, rows)
    assert cache.template_ok  # every new cluster was the template's copy, not a fallback


def test_only_what_changed_is_built_again() -> None:
    rng = random.Random(7)
    rows = {"summarize": [_row(rng, i, "summarize") for i in range(40)]}
    for c in rows["summarize"]:
        c.dropped_reason = ""
    cache = CompileCache()
    first = compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    built = cache.built
    assert built == len(first.clusters) + len(first.routes)
    again = compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    assert cache.built == built  # nothing changed: nothing built
    assert all(again.clusters[n] is r for n, r in first.clusters.items())
    rows["summarize"][5].endpoint = "10.200.0.1:9001"  # one deployment's endpoint moved
    moved = compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    name = cluster_name(rows["summarize"][5].deployment_id)
    assert moved.clusters[name].version != first.clusters[name].version
    assert cache.built == built + 1  # that cluster alone (its order, routes: the same)
    assert [n for n in moved.clusters if moved.clusters[n] is not first.clusters[n]] == [name]


def test_the_filters_run_again_only_on_rows_that_changed() -> None:
    rng = random.Random(11)
    rows = {"summarize": [_row(rng, i, "summarize") for i in range(60)]}
    cache = CompileCache()
    compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    memo = cache.memos["r-east"]
    first = memo.asked
    assert first >= 60  # every row, at every SLO it was ranked at
    compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    assert memo.asked == first  # nothing changed: no filter ran
    rows["summarize"][7].cost_usd *= 3  # one row changed
    compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    points = len({round(c.latency_p95_ms) for c in rows["summarize"]}) + 2
    assert first < memo.asked <= first + points  # that row, once per SLO it is ranked at


def test_a_template_that_no_longer_matches_is_turned_off_and_the_output_stays_exact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``clusters.deployment_cluster`` reading another field of the row (a change there the
    cache's template does not know) is caught by the per-compile check."""
    def reads_more(c: placement_pb2.Candidate, s: EnvoySettings):  # type: ignore[no-untyped-def]
        msg = deployment_cluster(c, s)
        msg.alt_stat_name = c.backend_id
        return msg

    monkeypatch.setattr(resources, "deployment_cluster", reads_more)
    rng = random.Random(3)
    rows = {"summarize": [_row(rng, i, "summarize") for i in range(10)]}
    cache = CompileCache()
    got = compile_region("r-east", _tables(rng, rows), PROFILE, EnvoySettings(), cache=cache)
    assert not cache.template_ok
    for c in rows["summarize"]:
        name = cluster_name(c.deployment_id)
        assert got.clusters[name].message.alt_stat_name == c.backend_id  # type: ignore[attr-defined]
