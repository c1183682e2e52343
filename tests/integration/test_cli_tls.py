"""The operator commands against a placement that serves mTLS (``[security] plaintext =
false``), certificates from ``switchyard certs``' own code: ``status``, ``drain`` and the
capacity section dial with the config's CA and the admin certificate (review10 finding 3:
they dialled plaintext and said "cannot reach placement … is the mesh running?"), and a
plaintext config against that port says placement requires TLS. In-process placement on
127.0.0.1 port 0; the CLI runs in a thread (its stubs are synchronous)."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services import cli
from services.config import load_config
from services.placement.main import start_placement
from services.security.certs import create_dev_pki

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_config(d: pathlib.Path, certs: pathlib.Path | None, port: int = 0) -> pathlib.Path:
    """examples/mesh.toml on ``port`` with its run dir under ``d``, and ``[security]`` mTLS
    with ``certs`` (None: the example's plaintext)."""
    shutil.copy(ROOT / "examples" / "prices.toml", d / "prices.toml")
    text = (ROOT / "examples" / "mesh.toml").read_text()
    text = (text.replace("port = 50050", f"port = {port}", 1)
            .replace("metrics_port = 9150", "metrics_port = 0", 1)
            .replace('run_dir = ".run"', f'run_dir = "{d / "run"}"', 1))
    if certs is not None:
        text += (f'\n[security]\nplaintext = false\nca_file = "{certs / "ca.pem"}"\n'
                 f'cert_file = "{certs / "{role}.pem"}"\nkey_file = "{certs / "{role}.key"}"\n'
                 'admin_identities = ["admin.switchyard.local"]\n')
    path = d / ("mesh-tls.toml" if certs is not None else "mesh-plain.toml")
    path.write_text(text)
    return path


@pytest_asyncio.fixture
async def tls_placement(tmp_path: pathlib.Path) -> AsyncIterator[tuple[pathlib.Path, str]]:
    certs = tmp_path / "certs"
    create_dev_pki(certs)  # what `switchyard certs --dir` writes
    config = write_config(tmp_path, certs)
    running = await start_placement(load_config(config), port=0, metrics_port=0,
                                     learned=tmp_path / "learned.json", peers=[])
    try:
        yield config, f"127.0.0.1:{running.port}"
    finally:
        await running.stop()


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` configures process-wide logging onto the (captured) stderr: not in tests."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_status_and_drain_reach_a_placement_that_requires_mtls(
        tls_placement: tuple[pathlib.Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    config, address = tls_placement
    code = await run_cli("status", "--config", str(config), "--placement", address,
                         "--no-legend")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "use1-t4" in out and "route table" in out
    assert "the capacity loop is off" in out  # the Capacity service, over the same TLS
    code = await run_cli("drain", "backend", "use1-t4", "--config", str(config),
                         "--placement", address)
    out, err = capsys.readouterr()
    assert code == 0, err  # the admin certificate passes admin_identities
    assert "AVAILABILITY_DRAINED: use1-t4" in out


async def test_a_plaintext_config_against_a_tls_placement_says_tls_is_required(
        tls_placement: tuple[pathlib.Path, str], tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, address = tls_placement
    (tmp_path / "plain").mkdir()
    plain = write_config(tmp_path / "plain", None)
    code = await run_cli("status", "--config", str(plain), "--placement", address)
    err = capsys.readouterr().err
    assert code == 3
    assert (f"placement at {address} requires TLS: pass --config with [security]" in err), err
    assert "is the mesh running?" not in err


async def test_certificates_of_another_ca_are_said_not_unreachable(
        tls_placement: tuple[pathlib.Path, str], tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, address = tls_placement
    (tmp_path / "rogue").mkdir()
    create_dev_pki(tmp_path / "rogue" / "certs", reuse_ca=False)  # a CA placement never saw
    rogue = write_config(tmp_path / "rogue", tmp_path / "rogue" / "certs")
    code = await run_cli("status", "--config", str(rogue), "--placement", address)
    err = capsys.readouterr().err
    assert code == 3
    assert f"placement at {address} refused the TLS handshake: check that [security] " \
           "ca_file" in err, err


async def test_up_sees_a_placement_that_requires_mtls_as_serving(
        tls_placement: tuple[pathlib.Path, str]) -> None:
    """``switchyard up`` waits for each child to answer its health check: it dialled a TLS
    placement in plaintext, saw it as never serving and stopped the mesh after 120 s
    ("did not become ready"). Now it dials as the config's [security] says."""
    from services.up import is_serving

    config, address = tls_placement
    security = load_config(config).security
    assert await asyncio.to_thread(is_serving, address, "grpc", security)
    assert not await asyncio.to_thread(is_serving, address, "grpc")  # plaintext: refused
