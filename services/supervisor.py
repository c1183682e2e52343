"""Keep child processes running: reap the dead, say why they died, restart them with backoff.

``switchyard up`` hands every process it starts to one :class:`Supervisor`. A child that exits
is reaped at once (no zombie), and one structured ``child_exited`` event names it, its pid,
its exit code or signal and how long it ran. Then it is restarted after a backoff that doubles
from ``backoff_s`` up to ``backoff_max_s`` and goes back to ``backoff_s`` once a child has run
``healthy_after_s`` without dying, unless it was **stopped on purpose**:

- by an operator or its owner in this process: :meth:`Supervisor.stop`;
- by another process (a drill attached to ``switchyard up``): :func:`hold` writes a marker
  ``<run_dir>/held/<name>`` before it signals the child, and :func:`release` removes it once
  that process has started a replacement itself (whose pid it writes to ``pids.json``; the
  supervisor then watches that pid instead of starting a second copy).

The supervisor knows nothing of what its children are: a child is anything with ``name``,
``argv``, ``log`` and a ``proc`` attribute it may replace (``services.up.Child``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger("switchyard.supervisor")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Supervisable(Protocol):
    name: str
    argv: list[str]
    log: pathlib.Path
    proc: Any  # subprocess.Popen[bytes] | None, or a pid-only stand-in


def _marker(run_dir: pathlib.Path, name: str) -> pathlib.Path:
    return run_dir / "held" / _UNSAFE.sub("_", name)


def hold(run_dir: pathlib.Path, name: str, reason: str) -> None:
    """Mark child ``name`` as stopped on purpose (call it *before* signalling the child)."""
    path = _marker(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason)


def release(run_dir: pathlib.Path, name: str) -> None:
    """Undo :func:`hold`: the supervisor looks after ``name`` again (see the module docstring)."""
    _marker(run_dir, name).unlink(missing_ok=True)


def release_all(run_dir: pathlib.Path) -> None:
    """Forget every hold (a fresh mesh starts with none; a drill that crashed left some)."""
    for path in (run_dir / "held").glob("*"):
        path.unlink(missing_ok=True)


def held(run_dir: pathlib.Path, name: str) -> str | None:
    """Why ``name`` was stopped on purpose, or None when it was not."""
    try:
        return _marker(run_dir, name).read_text() or "held"
    except FileNotFoundError:
        return None


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL`` (Popen reports a signal as a negative code)."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return f"exit code {returncode}"


class PidProcess:
    """A child started by another process, driven by pid only (never reaped here): a
    drill's replacement adopted by the supervisor, or a ``switchyard up`` child a drill
    attaches to."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "X"
        if state in ("Z", "X") and self.returncode is None:
            self.returncode = -signal.SIGKILL if state == "X" else 0
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.05)
        return self.returncode or 0

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class _Record:
    child: Supervisable
    started_at: float
    restarts: int = 0
    backoff_s: float = 0.0
    due_at: float | None = None  # a restart is scheduled for this time
    stopped: str = ""  # why it is stopped on purpose ("" = supervised)
    reported_pid: int | None = None  # the dead pid already reported


class Supervisor:
    """Reaps, reports and restarts children; thread-safe; :meth:`poll` is one pass."""

    def __init__(self, run_dir: pathlib.Path, env: Mapping[str, str] | None = None, *,
                 backoff_s: float = 0.5, backoff_max_s: float = 30.0,
                 healthy_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[], None] | None = None) -> None:
        self.run_dir = run_dir
        self.env = dict(os.environ if env is None else env)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.clock = clock
        self.on_change = on_change  # called after a restart (e.g. to rewrite pids.json)
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._quit = threading.Event()

    # -- children ------------------------------------------------------------------------

    def spawn(self, child: Supervisable) -> None:
        """Start ``child`` (its output appended to ``child.log``) and supervise it."""
        self._popen(child)
        with self._lock:
            self._records[child.name] = _Record(child, self.clock(), backoff_s=self.backoff_s)

    def adopt(self, child: Supervisable) -> None:
        """Supervise a child already started (``child.proc`` set)."""
        with self._lock:
            self._records[child.name] = _Record(child, self.clock(), backoff_s=self.backoff_s)

    def stop(self, name: str, reason: str = "stopped by operator",
             sig: int = signal.SIGTERM) -> None:
        """Stop ``name`` on purpose: it is signalled and not restarted."""
        with self._lock:
            rec = self._records[name]
            rec.stopped, rec.due_at = reason, None
        proc = rec.child.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def resume(self, name: str) -> None:
        """Supervise ``name`` again after :meth:`stop`; restarted now if it is not running."""
        with self._lock:
            rec = self._records[name]
            rec.stopped, rec.backoff_s = "", self.backoff_s
            if rec.child.proc is None or rec.child.proc.poll() is not None:
                rec.due_at = self.clock()

    def restarts(self, name: str) -> int:
        with self._lock:
            return self._records[name].restarts

    # -- the loop ------------------------------------------------------------------------

    def poll(self) -> None:
        """One pass: reap and report exits, schedule and perform due restarts."""
        now = self.clock()
        restarted = False
        with self._lock:
            records = list(self._records.values())
        for rec in records:
            restarted |= self._check(rec, now)
        if restarted and self.on_change is not None:
            self.on_change()

    def _check(self, rec: _Record, now: float) -> bool:
        """Reap and report ``rec``'s child if it died; restart it when due. True: restarted."""
        child, proc = rec.child, rec.child.proc
        code = None if proc is None else proc.poll()  # poll() reaps our own children
        if proc is None or code is None:
            return False
        if rec.reported_pid != proc.pid:
            rec.reported_pid = proc.pid
            self._report(rec, proc.pid, code, now)
        if not self._due(rec, proc.pid, now):
            return False
        # Its session (start_new_session: pgid = pid) may hold orphans that keep its port,
        # e.g. Triton's Python backend stubs after a SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            self._popen(child)
        except OSError:
            log.exception("child_restart_failed", child=child.name)
            rec.due_at = None
            return False
        rec.restarts += 1
        rec.started_at, rec.due_at = now, None
        log.warning("child_restarted", child=child.name, pid=child.proc.pid,
                    restarts=rec.restarts)
        return True

    def _due(self, rec: _Record, dead_pid: int, now: float) -> bool:
        """Whether a dead child should be started now (scheduling the restart if need be)."""
        if (rec.stopped or held(self.run_dir, rec.child.name) is not None
                or self._adopt_replacement(rec, dead_pid, now)):
            return False
        if rec.due_at is None:
            rec.due_at = now + rec.backoff_s
            log.info("child_restart_scheduled", child=rec.child.name,
                     in_s=round(rec.backoff_s, 3), restarts=rec.restarts)
            rec.backoff_s = min(rec.backoff_s * 2, self.backoff_max_s)
        return now >= rec.due_at

    def _report(self, rec: _Record, pid: int, code: int, now: float) -> None:
        ran = now - rec.started_at
        if ran >= self.healthy_after_s:
            rec.backoff_s = self.backoff_s  # it ran healthy for a while: start over
        why = rec.stopped or held(self.run_dir, rec.child.name)
        log.warning("child_exited", child=rec.child.name, pid=pid, status=describe_exit(code),
                    ran_s=round(ran, 3), on_purpose=bool(why), reason=why or "",
                    action="none (stopped on purpose)" if why else
                    f"restart in {rec.backoff_s:g} s")

    def _adopt_replacement(self, rec: _Record, dead_pid: int, now: float) -> bool:
        """Another process restarted the child (and wrote its pid): watch that one."""
        try:
            pids = json.loads((self.run_dir / "pids.json").read_text())
        except (OSError, ValueError):
            return False
        pid = pids.get(rec.child.name) if isinstance(pids, dict) else None
        if not isinstance(pid, int) or pid == dead_pid:
            return False
        replacement = PidProcess(pid)
        if replacement.poll() is not None:
            return False
        rec.child.proc = replacement
        rec.started_at, rec.due_at = now, None
        log.info("child_adopted", child=rec.child.name, pid=pid)
        return True

    def _popen(self, child: Supervisable) -> None:
        with child.log.open("ab") as out:
            child.proc = subprocess.Popen(child.argv, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, start_new_session=True)

    def start(self, interval_s: float = 0.2) -> None:
        """Poll in a background thread until :meth:`close`."""
        def loop() -> None:
            while not self._quit.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # the supervisor must outlive a bad pass
                    log.exception("supervisor_poll_failed")
        self._thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop supervising (children keep running; the caller stops them)."""
        self._quit.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for rec in self._records.values():
                rec.stopped = rec.stopped or "supervisor closed"
