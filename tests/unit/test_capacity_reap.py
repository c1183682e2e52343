"""``reap_leftovers`` returns only once a leftover has exited, SIGKILLing one that ignores
SIGTERM. The leftovers are stand-ins, labelled as such: Python processes whose command line
reads as a tritonserver on the instance's repository (what ``reap_leftovers`` checks)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from services.capacity.local import reap_leftovers
from tests.mesh_harness import eventually_sync

STAND_IN = """
import pathlib, signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[2]).write_text("ready")
time.sleep(120)
"""


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Exited (a zombie not yet reaped counts), read from /proc without reaping it."""
    try:
        state = pathlib.Path(f"/proc/{proc.pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def stand_in(root: pathlib.Path, name: str, on_term: str) -> subprocess.Popen[bytes]:
    inst = root / name
    (inst / "repo").mkdir(parents=True)
    ready = inst / "ready"
    proc = subprocess.Popen(
        ["/stand-in/tritonserver", "-c", STAND_IN, on_term, str(ready),
         f"--model-repository={inst / 'repo'}"], executable=sys.executable)
    (inst / "endpoints.json").write_text(json.dumps({"pid": proc.pid}))
    eventually_sync(ready.exists, 20, f"{name} stand-in started")
    return proc


def test_a_leftover_that_ignores_sigterm_is_killed_and_gone_on_return(
        tmp_path: pathlib.Path) -> None:
    stubborn = stand_in(tmp_path, "pool-1", "ignore")
    polite = stand_in(tmp_path, "pool-2", "exit")
    try:
        reaped = reap_leftovers(tmp_path, wait_s=0.5)
        gone = {p.pid: exited(p) for p in (stubborn, polite)}  # read at once: no waiting
        assert sorted(reaped) == sorted([stubborn.pid, polite.pid])
        assert gone == {stubborn.pid: True, polite.pid: True}
        assert stubborn.wait(5) == -9 and polite.wait(5) == -15  # SIGKILL / SIGTERM
    finally:
        for p in (stubborn, polite):
            p.kill()
            p.wait(5)


def test_a_recorded_pid_that_is_not_that_tritonserver_is_left_alone(
        tmp_path: pathlib.Path) -> None:
    other = stand_in(tmp_path / "elsewhere", "pool-1", "exit")  # on another repository
    mine = tmp_path / "run" / "pool-1"
    (mine / "repo").mkdir(parents=True)
    (mine / "endpoints.json").write_text(json.dumps({"pid": other.pid}))
    try:
        assert reap_leftovers(tmp_path / "run", wait_s=0.5) == []
        assert not exited(other)
    finally:
        other.kill()
        other.wait(5)
