"""``switchyard drain / status / explain`` with unsharded ``[placement] replicas`` ask the first
of host:port and the replicas that answers (review11 finding 3). Before, they asked host:port
only: with the primary down and a standby serving, ``drain`` exited 3 "is the mesh running?",
in the incident standbys exist for. Real placement on 127.0.0.1, the real CLI in a thread."""

from __future__ import annotations

import asyncio
import pathlib
import tomllib
from collections.abc import AsyncIterator

import pytest

from services import cli
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.cli_placement import admin_channel
from services.config import load_config
from services.drills.sandbox import dumps_toml, sandbox_config
from services.placement.main import start_placement
from services.ports import free_ports
from services.security.certs import create_dev_pki

pytestmark = pytest.mark.asyncio
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_process_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


def config(tmp_path: pathlib.Path, primary: int, replicas: list[int],
           certs: pathlib.Path | None = None) -> str:
    """examples/mesh.toml on free ports; with ``certs``, mTLS as ``switchyard certs`` sets up."""
    security = {} if certs is None else {"security": {
        "plaintext": False, "ca_file": str(certs / "ca.pem"),
        "cert_file": str(certs / "{role}.pem"), "key_file": str(certs / "{role}.key"),
        "admin_identities": ["admin.switchyard.local"]}}
    return str(sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path, overrides={
        "placement": {"port": primary, "replicas": [f"127.0.0.1:{p}" for p in replicas]},
        **security}))


@pytest.fixture(params=["plaintext", "mTLS"])
async def standby(tmp_path: pathlib.Path, request: pytest.FixtureRequest
                  ) -> AsyncIterator[tuple[str, int]]:
    """A config whose primary is down (nothing listens on its port) and whose second
    replica serves (plaintext, or mTLS: the probe must dial as the command does); the first
    replica is down too."""
    certs = None
    if request.param == "mTLS":
        certs = tmp_path / "certs"
        create_dev_pki(certs)  # what `switchyard certs --dir` writes
    down, down_too, up = free_ports(3)
    path = config(tmp_path, down, [down_too, up], certs)
    running = await start_placement(load_config(path), port=up, metrics_port=0, peers=[])
    try:
        yield path, up
    finally:
        await running.stop(0.2)


def sharded(path: pathlib.Path, replicas: list[int]) -> str:
    """``path`` with one ``[[placement.shards]]`` entry owning every region, on ``replicas``."""
    raw = tomllib.loads(path.read_text())
    raw["placement"].pop("replicas")
    raw["placement"]["shards"] = [{"regions": [r["name"] for r in raw["regions"]],
                                   "replicas": [f"127.0.0.1:{p}" for p in replicas]}]
    path.write_text(dumps_toml(raw))
    return str(path)


@pytest.fixture(params=["plaintext", "mTLS"])
async def shard_standby(tmp_path: pathlib.Path, request: pytest.FixtureRequest
                        ) -> AsyncIterator[tuple[str, int]]:
    """One ``[[placement.shards]]`` entry owning every region: its primary down, its standby
    serving (plaintext, or mTLS: the replica probe must dial as the command does)."""
    certs = None
    if request.param == "mTLS":
        certs = tmp_path / "certs"
        create_dev_pki(certs)
    down, up = free_ports(2)
    path = sharded(pathlib.Path(config(tmp_path, 0, [], certs)), [down, up])
    running = await start_placement(load_config(path), port=up, metrics_port=0, peers=[])
    try:
        yield path, up
    finally:
        await running.stop(0.2)


async def test_drain_reaches_a_shards_standby_when_its_primary_is_down(
        shard_standby: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    path, port = shard_standby
    code = await switchyard("drain", "--config", path, "backend", "use1-t4")
    assert code == 0, capsys.readouterr().err
    drained = fleet_pb2.AVAILABILITY_DRAINED
    assert await asyncio.to_thread(availability, path, port, "use1-t4") == drained


async def switchyard(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


def availability(path: str, port: int, backend: str) -> int:
    with admin_channel(f"127.0.0.1:{port}", load_config(path).security) as ch:
        got = placement_pb2_grpc.PlacementStub(ch).ListBackends(
            placement_pb2.ListBackendsRequest(), timeout=5)
    state: int = next(b.availability for b in got.backends if b.backend.id == backend)
    return state


async def test_drain_reaches_the_standby_when_the_primary_is_down(
        standby: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    path, port = standby
    code = await switchyard("drain", "--config", path, "backend", "use1-t4")
    assert code == 0, capsys.readouterr().err
    drained = fleet_pb2.AVAILABILITY_DRAINED
    assert await asyncio.to_thread(availability, path, port, "use1-t4") == drained


@pytest.mark.parametrize("command", [["status", "--no-legend"], ["explain", "summarize"]])
async def test_status_and_explain_ask_the_standby_when_the_primary_is_down(
        standby: tuple[str, int], command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    path, _port = standby
    code = await switchyard(command[0], "--config", path, *command[1:])
    assert code == 0, capsys.readouterr().err


async def test_no_replica_answering_names_each_address_tried(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    primary, replica = free_ports(2)
    path = config(tmp_path, primary, [replica])
    assert await switchyard("drain", "--config", path, "backend", "use1-t4") == 3
    err = capsys.readouterr().err
    assert (f"cannot reach placement at 127.0.0.1:{primary} or any of its [placement] "
            f"replicas (127.0.0.1:{replica})") in err, err


async def test_status_reads_a_shards_standby_when_its_primary_is_down(
        shard_standby: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    path, port = shard_standby
    code = await switchyard("status", "--config", path, "--no-legend")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "== placement.shards[0] (regions " in out and f"at 127.0.0.1:{port}" in out, out
