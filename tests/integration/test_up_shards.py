"""``switchyard up`` with ``[[placement.shards]]`` (issue 15, scale-out), as processes: the
example ``examples/sharded.toml`` (two of its backends, on free ports) starts every replica
of every shard, the agent reports each backend to its region's shard, a Python edge serves a
backend of each shard, ``switchyard status`` and ``drain`` speak to each shard, and a killed
replica is restarted by the supervisor while the edge keeps serving its shard's rows."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

import grpc
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.config import load_config
from services.demo import infer_with_trailers
from services.drills.sandbox import sandbox_config
from services.ports import free_port
from services.up import Mesh, is_serving
from tests.mesh_harness import eventually_sync, summarize_input

pytestmark = pytest.mark.integration

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "sharded.toml"
AWS, GCP = "use1-t4", "usc1-l4"  # shards[0] (aws regions), shards[1] (gcp regions)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("up-shards")
    raw = load_config(EXAMPLE)
    shards = [{"replicas": [f"127.0.0.1:{free_port()}" for _ in s.replicas],
               "regions": s.regions} for s in raw.placement.shards]
    path = sandbox_config(EXAMPLE, tmp, backends=[AWS, GCP],
                          overrides={"placement": {"shards": shards}})
    mesh = Mesh(load_config(path), str(path))
    mesh.start(progress=False)
    mesh.supervise()
    try:
        yield mesh
    finally:
        mesh.stop()


def _backends(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as ch:
        resp = placement_pb2_grpc.PlacementStub(ch).ListBackends(
            placement_pb2.ListBackendsRequest(), timeout=5)
    return {b.backend.id: b.availability for b in resp.backends}


def _served_by(mesh: Mesh, region: str) -> str:
    """One tritonclient call through the first edge, allowed only ``region``."""
    edge = mesh.cfg.edges[0]
    client = tc.InferenceServerClient(f"{edge.host}:{edge.port}")
    try:
        _, trailers = infer_with_trailers(client, "summarize", [summarize_input()],
                                          [("x-allowed-regions", region)], 5.0)
    finally:
        client.close()
    return trailers["x-served-by"].split("/", 1)[0]


def _answers(mesh: Mesh, region: str) -> str:
    try:
        return _served_by(mesh, region)
    except InferenceServerException as exc:  # the edge may not hold that shard's rows yet
        return f"refused: {exc}"


def _cli(mesh: Mesh, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                          mesh.config_path], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ), check=True)
    return out.stdout


def _shard(mesh: Mesh, i: int) -> Sequence[str]:
    return mesh.cfg.placement.shards[i].replicas


def test_up_starts_every_replica_of_every_shard_each_owning_its_regions(up: Mesh) -> None:
    names = [c.name for c in up.children if c.name.startswith("placement")]
    assert names == ["placement shards[0] primary", "placement shards[0] standby 1",
                     "placement shards[1] primary"]
    for address in _shard(up, 0):
        assert set(_backends(address)) == {AWS}
    assert set(_backends(_shard(up, 1)[0])) == {GCP}
    # The edge (in aws-us-east-1) holds both shards' rows: each is served when allowed.
    eventually_sync(lambda: _answers(up, "aws-us-east-1") == AWS, 20, "shards[0]'s backend")
    eventually_sync(lambda: _answers(up, "gcp-us-central1") == GCP, 20, "shards[1]'s backend")
    status = _cli(up, "status", "--no-legend")
    first, second = status.split("== placement.shards[1]")
    assert "== placement.shards[0]" in first and AWS in first and GCP not in first
    assert GCP in second and AWS not in second


def test_explain_on_a_sharded_mesh_explains_every_shards_deployments(up: Mesh) -> None:
    eventually_sync(lambda: _answers(up, "gcp-us-central1") == GCP, 20, "shards[1]'s backend")
    out = _cli(up, "explain", "summarize", "--region", "aws-us-east-1")
    assert f"{AWS}/" in out and f"{GCP}/" in out, out
    assert "did not answer" not in out, out


def test_a_killed_replica_is_restarted_and_the_edge_keeps_its_shards_rows(up: Mesh) -> None:
    assert up.supervisor is not None
    eventually_sync(lambda: _answers(up, "gcp-us-central1") == GCP, 20, "shards[1]'s backend")
    child = next(c for c in up.children if c.name == "placement shards[1] primary")
    assert child.proc is not None
    old = child.proc.pid
    child.proc.send_signal(signal.SIGKILL)
    eventually_sync(lambda: child.proc is not None and child.proc.pid != old, 20,
                    "the supervisor restarted shards[1]")
    # While it comes back the edge routes on the shard's last rows.
    assert _served_by(up, "gcp-us-central1") == GCP
    eventually_sync(lambda: is_serving(child.address, "grpc"), 30,
                    "the restarted replica serves")
    assert up.supervisor.restarts(child.name) == 1
    eventually_sync(lambda: set(_backends(child.address)) == {GCP}, 10,
                    "the restarted replica owns its shard's backend again")
    assert _served_by(up, "gcp-us-central1") == GCP


def test_drain_goes_to_the_shard_owning_the_backend(up: Mesh) -> None:
    """Last: a replica killed after this could restore the drain from its learned file."""
    _cli(up, "drain", "backend", GCP)
    try:
        assert _backends(_shard(up, 1)[0])[GCP] == fleet_pb2.AVAILABILITY_DRAINED
    finally:
        _cli(up, "drain", "backend", GCP, "--undo")
    assert _backends(_shard(up, 1)[0])[GCP] == fleet_pb2.AVAILABILITY_ACTIVE
