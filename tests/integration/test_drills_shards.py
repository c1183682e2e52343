"""Failover drills on a mesh whose placement is sharded (issue 15): ``examples/sharded.toml``
with one backend in each shard (``use1-t4`` in the AWS shard, ``usc1-l4`` in the GCP shard),
every replica of both shards started as ``switchyard up`` starts them, Python edges, steady
tritonclient load with a 2 s deadline. The drills ask each shard for what it owns (a drain
goes to the shard owning the backend, health is the union of both shards' answers) and a
placement outage kills every replica of every shard. The bar is the one-placement mesh's.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.drill_harness import DrillMesh, assert_rerouted_without_loss, drill, drill_mesh

pytestmark = pytest.mark.integration

SHARDED = pathlib.Path(__file__).resolve().parents[2] / "examples" / "sharded.toml"
AWS, GCP = "use1-t4", "usc1-l4"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillMesh]:
    with drill_mesh(tmp_path_factory.mktemp("drill-shards"), source=SHARDED,
                    backends=[AWS, GCP]) as dm:
        assert len(dm.cfg.placement.shards) == 2
        assert len(dm.mesh.children) > 0
        yield dm


def test_the_sandbox_puts_every_replica_of_every_shard_on_its_own_port(
        mesh: DrillMesh) -> None:
    ports = [a.rpartition(":")[2] for s in mesh.cfg.placement.shards for a in s.replicas]
    assert len(ports) == len(set(ports)) == sum(len(s.replicas)
                                               for s in mesh.cfg.placement.shards)
    names = {c.name for c in mesh.mesh.children if c.name.startswith("placement ")}
    assert len(names) == len(ports)


@pytest.mark.parametrize("scenario", ["drain-backend", "placement-outage"])
def test_a_drill_on_sharded_placement_loses_no_call(mesh: DrillMesh, scenario: str) -> None:
    r = drill(mesh, scenario, settle_timeout_s=30.0)
    assert_rerouted_without_loss(r, scenario)
    if scenario == "drain-backend":
        # The drained backend belongs to one shard; the calls went to the other shard's.
        during = next(p for p in r.phases if p.phase == "during")
        assert any(d.split("/", 1)[0] not in r.faulted_backends
                   for d in during.served_by), r.table()
