"""``Mesh.stop`` leaves nothing of what a child started: a child that outlives SIGTERM is
killed with its whole session (``start_new_session``: pgid = its pid), as Triton's Python
backend stubs share tritonserver's. Real processes, no mesh."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys

from services.up import Child, Mesh
from tests.mesh_harness import eventually_sync, mesh_config

# A child that ignores SIGTERM and forks a grandchild (same session) that does too.
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    time.sleep(120)
    os._exit(0)
open(sys.argv[1], "w").write(str(pid))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):  # a zombie of ours is not alive
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_stop_kills_what_a_stubborn_child_started(tmp_path: pathlib.Path) -> None:
    mesh = Mesh(mesh_config(tmp_path), str(tmp_path / "mesh.toml"), stop_grace_s=0.5)
    (tmp_path / "logs").mkdir()
    from services.supervisor import Supervisor

    mesh.supervisor = Supervisor(tmp_path, dict(os.environ))
    pid_file = tmp_path / "grandchild.pid"
    child = Child("backend stubborn", [sys.executable, "-c", STUBBORN, str(pid_file)], "",
                  "triton", tmp_path / "logs" / "stubborn.log")
    mesh.supervisor.spawn(child)
    mesh.children.append(child)
    eventually_sync(lambda: pid_file.exists() and pid_file.read_text() != "", 20.0,
                    "the child wrote its grandchild's pid")
    grandchild = int(pid_file.read_text())
    try:
        assert alive(grandchild)
        mesh.stop()
        assert child.proc is not None and child.proc.returncode == -signal.SIGKILL
        eventually_sync(lambda: not alive(grandchild), 10.0,  # it was left running, orphaned
                        "the grandchild is gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)
