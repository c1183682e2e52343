"""The supervisor behind ``switchyard up`` on real child processes: reap, report, restart."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from services.supervisor import Supervisor, describe_exit, held, hold, release, release_all
from tests.mesh_harness import eventually_sync


@dataclass
class Kid:
    name: str
    argv: list[str]
    log: pathlib.Path
    proc: Any = None


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# A child that lives until killed (its sleep is its whole job, nobody waits on it).
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def kid(tmp_path: pathlib.Path) -> Iterator[Kid]:
    k = Kid("sleeper", SLEEPER, tmp_path / "sleeper.log")
    yield k
    if k.proc is not None and k.proc.poll() is None:
        k.proc.kill()
        k.proc.wait(5)


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def poll_until(sup: Supervisor, cond: Any, within_s: float = 10.0) -> None:
    """Drive ``sup.poll()`` until ``cond()`` (the child's death is real and asynchronous)."""
    def polled() -> bool:
        if cond():
            return True
        sup.poll()
        return False

    eventually_sync(polled, within_s, f"{cond} while polling the supervisor", poll_s=0.02)


def test_killed_child_is_reaped_reported_and_restarted(tmp_path: pathlib.Path, kid: Kid) -> None:
    clock = Clock()
    sup = Supervisor(tmp_path, backoff_s=1.0, backoff_max_s=4.0, healthy_after_s=60.0,
                     clock=clock)
    sup.spawn(kid)
    first = kid.proc.pid
    with capture_logs() as logs:
        os.kill(first, signal.SIGKILL)
        poll_until(sup, lambda: kid.proc.returncode is not None)
        assert not is_zombie(first)  # reaped at once, not left as <defunct>
        sup.poll()
        assert kid.proc.pid == first  # backoff: not restarted before 1 s
        clock.t = 1.0
        sup.poll()
    assert kid.proc.pid != first and kid.proc.poll() is None
    assert sup.restarts("sleeper") == 1
    exited = [e for e in logs if e["event"] == "child_exited"]
    assert exited == [{"event": "child_exited", "log_level": "warning", "child": "sleeper",
                       "pid": first, "status": "signal SIGKILL", "ran_s": 0.0,
                       "on_purpose": False, "reason": "", "action": "restart in 1 s"}]
    # It dies again at once: the backoff doubled (capped at 4 s).
    second = kid.proc.pid
    os.kill(second, signal.SIGKILL)
    poll_until(sup, lambda: kid.proc.returncode is not None)
    clock.t = 2.5
    sup.poll()
    sup.poll()
    assert kid.proc.pid == second
    clock.t = 3.0
    sup.poll()
    assert kid.proc.pid != second and sup.restarts("sleeper") == 2


def test_backoff_resets_after_running_healthy(tmp_path: pathlib.Path, kid: Kid) -> None:
    clock = Clock()
    sup = Supervisor(tmp_path, backoff_s=1.0, backoff_max_s=8.0, healthy_after_s=10.0,
                     clock=clock)
    sup.spawn(kid)
    for restarts in (1, 2):
        pid = kid.proc.pid
        kid.proc.kill()
        poll_until(sup, lambda: kid.proc.returncode is not None)
        clock.t += 8.0
        sup.poll()
        assert sup.restarts("sleeper") == restarts and kid.proc.pid != pid
    clock.t += 30.0  # ran healthy for longer than healthy_after_s
    pid = kid.proc.pid
    kid.proc.kill()
    poll_until(sup, lambda: kid.proc.returncode is not None)
    clock.t += 1.0
    sup.poll()
    assert kid.proc.pid != pid  # back to the first backoff (1 s), not 4 s


def test_child_stopped_on_purpose_is_not_restarted(tmp_path: pathlib.Path, kid: Kid) -> None:
    clock = Clock()
    sup = Supervisor(tmp_path, backoff_s=0.5, clock=clock)
    sup.spawn(kid)
    pid = kid.proc.pid
    with capture_logs() as logs:
        sup.stop("sleeper", "operator asked")
        poll_until(sup, lambda: kid.proc.returncode is not None)
        clock.t = 1000.0
        sup.poll()
    assert kid.proc.pid == pid and sup.restarts("sleeper") == 0
    assert [e["on_purpose"] for e in logs if e["event"] == "child_exited"] == [True]
    assert [e["status"] for e in logs if e["event"] == "child_exited"] == ["signal SIGTERM"]
    sup.resume("sleeper")
    sup.poll()
    assert kid.proc.pid != pid and kid.proc.poll() is None


def test_drill_hold_then_its_own_replacement_is_adopted(tmp_path: pathlib.Path,
                                                        kid: Kid) -> None:
    """A drill in another process holds the child, kills it, starts its own copy, releases."""
    clock = Clock()
    sup = Supervisor(tmp_path, backoff_s=0.5, clock=clock)
    sup.spawn(kid)
    pid = kid.proc.pid
    hold(tmp_path, "sleeper", "drill sent SIGKILL")
    os.kill(pid, signal.SIGKILL)
    poll_until(sup, lambda: kid.proc.returncode is not None)
    clock.t = 100.0
    sup.poll()
    assert kid.proc.pid == pid and sup.restarts("sleeper") == 0  # held: not restarted
    with (tmp_path / "own.log").open("ab") as out:
        theirs = subprocess.Popen(SLEEPER, stdout=out, stderr=subprocess.STDOUT)
    try:
        (tmp_path / "pids.json").write_text(f'{{"sleeper": {theirs.pid}}}')
        release(tmp_path, "sleeper")
        sup.poll()
        clock.t = 200.0
        sup.poll()
        assert kid.proc.pid == theirs.pid and sup.restarts("sleeper") == 0  # one copy only
    finally:
        theirs.kill()
        theirs.wait(5)


def test_exit_described() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "signal SIGKILL"


def test_background_supervisor_restarts_a_killed_child(tmp_path: pathlib.Path, kid: Kid) -> None:
    """What ``switchyard up`` runs: the polling thread notices on its own."""
    sup = Supervisor(tmp_path, backoff_s=0.05, backoff_max_s=0.2)
    sup.spawn(kid)
    first = kid.proc.pid
    sup.start(interval_s=0.02)
    try:
        os.kill(first, signal.SIGKILL)
        eventually_sync(lambda: sup.restarts("sleeper") >= 1, 10, "restarted", poll_s=0.02)
        assert kid.proc.pid != first and kid.proc.poll() is None and not is_zombie(first)
    finally:
        sup.close()


def test_restart_kills_orphans_left_in_the_dead_childs_session(tmp_path: pathlib.Path) -> None:
    """A killed tritonserver leaves its Python stubs behind; they must not outlive it."""
    pidfile = tmp_path / "grandchild.pid"
    code = ("import pathlib, subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"pathlib.Path({str(pidfile)!r}).write_text(str(p.pid)); time.sleep(120)")
    kid = Kid("parent", [sys.executable, "-c", code], tmp_path / "parent.log")
    clock = Clock()
    sup = Supervisor(tmp_path, backoff_s=0.0, clock=clock)
    sup.spawn(kid)
    try:
        eventually_sync(lambda: pidfile.exists() and pidfile.read_text(), 10,
                        "the grandchild started", poll_s=0.02)
        orphan = int(pidfile.read_text())
        pidfile.unlink()
        kid.proc.kill()
        poll_until(sup, lambda: sup.restarts("parent") == 1)
        eventually_sync(lambda: not os.path.exists(f"/proc/{orphan}") or is_zombie(orphan),
                        10, "the orphan is gone after the restart", poll_s=0.02)
    finally:
        kid.proc.kill()
        kid.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(kid.proc.pid, signal.SIGKILL)


def test_a_fresh_mesh_forgets_holds_left_by_a_crashed_drill(tmp_path: pathlib.Path) -> None:
    hold(tmp_path, "placement", "drill sent SIGKILL")
    hold(tmp_path, "edge e1 (r-east)", "drill is restarting it")
    assert held(tmp_path, "edge e1 (r-east)") == "drill is restarting it"
    release_all(tmp_path)
    assert held(tmp_path, "placement") is None and held(tmp_path, "edge e1 (r-east)") is None
