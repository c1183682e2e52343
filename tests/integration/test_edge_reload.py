"""`switchyard edge` reloads tenant policies on SIGHUP and refuses a broken file."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

import pytest

from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

MESH = """
prices_file = "prices.toml"
run_dir = "{run}"
[[regions]]
name = "r-east"
cloud = "aws"
[[models]]
name = "m"
default_slo_ms = 100
variants = [{{ name = "m-v", quality = 0.8 }}]
[[backends]]
id = "b"
region = "r-east"
accelerator = "gpu"
grpc_port = 1
variants = ["m-v"]
[[edges]]
id = "e"
region = "r-east"
port = 0
[placement]
port = 1
[wan]
emulate = false
"""

TENANT = """
[security]
plaintext = true
[[security.tenants]]
name = "acme"
token = "t0k3n"
allowed_regions = ["r-east"]
"""


def wait_for(proc: subprocess.Popen[str], log: pathlib.Path, text: str, within_s: float) -> None:
    def logged() -> bool:
        if text in log.read_text():
            return True
        assert proc.poll() is None, log.read_text()[-2000:]
        return False

    eventually_sync(logged, within_s, f"{text!r} logged in {log}")


def test_sighup_reloads_policies_and_a_broken_file_is_refused(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "mesh.toml"
    (tmp_path / "prices.toml").write_text("")
    cfg.write_text(MESH.format(run=tmp_path / "run"))
    log = tmp_path / "edge.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "edge", "--config",
                                 str(cfg), "--id", "e"], stdout=out, stderr=out, text=True)
    try:
        wait_for(proc, log, "edge_listening", 20)
        cfg.write_text(MESH.format(run=tmp_path / "run") + TENANT)
        proc.send_signal(signal.SIGHUP)
        wait_for(proc, log, '"tenants": 1', 10)
        cfg.write_text(MESH.format(run=tmp_path / "run") + "[security\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(proc, log, "reload refused, keeping the old policies", 10)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
