"""SIGTERM to ``switchyard up`` while its mesh starts stops the processes it had started.

The mesh's children each run in their own session, so a CLI that SIGTERM ends at once
(Python's default) leaves them running: a drill's private mesh was found still serving after
its drill had gone. The command under test is the real ``services.cli.main``; only
``Mesh.start`` is replaced, by one that spawns a real child as the supervisor does (its own
session) and then waits, as ``Mesh._wait`` does while a child starts."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from services.drills.sandbox import sandbox_config
from tests.mesh_harness import eventually_sync

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import subprocess, sys, time
from services import up

def start(self, progress=True):
    (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            start_new_session=True)
    self.children.append(up.Child("sleeper", [], "", "relay", self.run_dir / "logs" / "s.log",
                                  proc))
    print(f"child {proc.pid}", flush=True)
    time.sleep(120)

up.Mesh.start = start
from services.cli import main
sys.exit(main(["up", "--config", sys.argv[1]]))
"""


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def up_starting(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``switchyard up`` blocked in its mesh's start, and the pid of the child it started."""
    cfg = sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path)
    cli = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg)], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None
    child = 0
    for line in cli.stdout:
        if line.startswith("child "):
            child = int(line.split()[1])
            break
    assert child, f"up never started its child: {cli.stderr.read() if cli.stderr else ''}"
    try:
        yield cli, child
    finally:
        cli.kill()
        cli.wait()
        if running(child):
            os.kill(child, signal.SIGKILL)


def test_sigterm_while_the_mesh_starts_stops_what_had_started(
        up_starting: tuple[subprocess.Popen[str], int]) -> None:
    cli, child = up_starting
    assert running(child)
    cli.send_signal(signal.SIGTERM)
    assert cli.wait(timeout=30) == 128 + signal.SIGTERM
    eventually_sync(lambda: not running(child), 15, "the child up started is stopped")
    assert cli.stdout is not None
    assert "stopping the mesh" in cli.stdout.read()
