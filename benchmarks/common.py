"""What every benchmark module shares, and the convention ``run_all`` relies on.

Plugging a benchmark in
=======================

A benchmark is a module ``benchmarks/<name>.py`` that defines::

    def run(quick: bool) -> Section | list[Section]: ...

``python -m benchmarks.run_all [--quick]`` finds every such module (helpers without a
``run``, or whose name starts with ``_``, are skipped), runs each one in its own Python
process (so a crash, a leaked child or a busy event loop in one cannot skew another) and
writes ``benchmarks/RESULTS.md`` from the returned sections, in the order
``dataplane, edgeprofile, decisions, controlplane, cost*, failover*``, then the rest alphabetically.

- ``quick=True`` must finish in about a minute; ``quick=False`` (the full run) within the
  module's share of ~15 minutes for the whole suite. Declare the expected wall time as
  ``ESTIMATE_S = (quick_seconds, full_seconds)`` at module level; ``run_all`` prints it.
- A :class:`Section` holds what RESULTS.md shows: a title, the exact command that
  reproduces it alone (``command_for(__name__)`` builds it), a markdown table
  (:func:`md_table`), notes (plain markdown lines: what was measured, caveats, the
  targets met or missed), and optional ``images`` (paths relative to ``benchmarks/``,
  e.g. a PNG written by the module) embedded under the table.
- Show progress with :func:`progress` (one line per step, flushed): it reaches the
  terminal while ``run_all`` waits.
- Measure and report; never assert a timing. Compare against alternatives in the same run.
- A module can also be run alone: ``python -m benchmarks.<name> [--quick]`` (use
  :func:`main` in ``if __name__ == "__main__"``), which prints its section as markdown.

Everything here is standard library only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)


@dataclass
class Section:
    """One benchmark's contribution to RESULTS.md."""

    title: str
    command: str
    table: str
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Section:
        return cls(**d)  # type: ignore[arg-type]

    def markdown(self, level: int = 2) -> str:
        out = [f"{'#' * level} {self.title}", "", "```", self.command, "```", "",
               self.table.rstrip(), ""]
        out += [f"![{os.path.basename(p)}]({p})\n" for p in self.images]
        if self.notes:
            out += [n if n.startswith(("- ", "* ", "|", "#", "```")) else f"- {n}"
                    for n in self.notes]
            out.append("")
        if self.elapsed_s:
            out += [f"_(took {self.elapsed_s:.0f} s)_", ""]
        return "\n".join(out)


def command_for(module: str, quick: bool) -> str:
    """The command that reruns one benchmark module alone."""
    if module == "__main__":  # run as ``python -m benchmarks.<name>``
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else module
    name = module.rsplit(".", 1)[-1]
    return f"python -m benchmarks.{name}" + (" --quick" if quick else "")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
             align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one char per column, ``l`` or ``r``."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The same table for a terminal."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in cells)


def _cell(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


_T0 = time.monotonic()


def progress(msg: str) -> None:
    """One progress line on stderr, with the time since the process started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- CPU of other processes (Linux /proc; no psutil needed) --------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds_all(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def children_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (e.g. nginx workers under the master)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


# -- machine ------------------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            mem_gib = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    try:
        import grpc
        grpc_v = grpc.__version__
    except ImportError:
        grpc_v = "?"
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model or platform.processor() or "?",
        "cores": str(os.cpu_count()),
        "memory": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc_v,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def take_option(name: str, default: str = "") -> str:
    """``--name VALUE`` taken out of sys.argv before :func:`main` parses it (``main`` knows
    only ``--quick``); ``default`` when it is not given."""
    if name not in sys.argv:
        return default
    i = sys.argv.index(name)
    value = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    return value


def main(run: Callable[[bool], Section | list[Section]], doc: str | None = None) -> None:
    """``python -m benchmarks.<name> [--quick]``: run one module, print its markdown."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--quick", action="store_true", help="small, ~1 minute version")
    args = p.parse_args()
    t0 = time.monotonic()
    result = run(args.quick)
    sections = result if isinstance(result, list) else [result]
    for s in sections:
        s.elapsed_s = s.elapsed_s or time.monotonic() - t0
        print(s.markdown())
