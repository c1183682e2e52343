"""Run every benchmark and write benchmarks/RESULTS.md.

    python -m benchmarks.run_all [--quick] [--only dataplane,decisions] [--out PATH]

Finds the benchmark modules (see the convention in ``benchmarks/common.py``), runs each in
its own Python process with progress on the terminal, and writes one RESULTS.md with the
machine, the date, every section and the command that reproduces it. A module that fails
gets a section saying so (with the error tail) instead of stopping the run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks.common import BENCH_DIR, ROOT, Section, machine_info, md_table

ORDER = ("dataplane", "edgeprofile", "decisions", "controlplane", "cost", "provisioned", "tokens",
         "failover")
NOT_BENCHMARKS = {"__init__", "common", "run_all"}


def _defines_run(path: pathlib.Path) -> bool:
    """True when the module defines a top-level ``run`` (checked without importing it)."""
    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, UnicodeDecodeError):
        return True  # let the child report the error in RESULTS.md
    return any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body)


def _estimate(path: pathlib.Path, quick: bool) -> str:
    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, UnicodeDecodeError):
        return "?"
    for n in tree.body:
        targets = [n.target] if isinstance(n, ast.AnnAssign) else getattr(n, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "ESTIMATE_S" for t in targets) and n.value:
            try:
                q, f = ast.literal_eval(n.value)
            except (ValueError, TypeError):
                return "?"
            return f"~{q if quick else f:.0f} s"
    return "?"


def _source(name: str) -> pathlib.Path:
    p = pathlib.Path(BENCH_DIR, name + ".py")
    return p if p.exists() else pathlib.Path(BENCH_DIR, name, "__init__.py")


def discover() -> list[str]:
    files = [*pathlib.Path(BENCH_DIR).glob("*.py"), *pathlib.Path(BENCH_DIR).glob("*/__init__.py")]
    names = sorted(p.parent.name if p.name == "__init__.py" else p.stem for p in files
                   if (p.parent.name if p.name == "__init__.py" else p.stem)
                   not in NOT_BENCHMARKS
                   and not (p.parent.name if p.name == "__init__.py" else p.stem).startswith("_")
                   and _defines_run(p))

    def rank(name: str) -> tuple[int, str]:
        for i, prefix in enumerate(ORDER):
            if name == prefix or name.startswith(prefix):
                return i, name
        return len(ORDER), name

    return sorted(names, key=rank)


def run_child(name: str, quick: bool, out: str) -> None:
    """In the child process: import one module, run it, dump its sections as JSON."""
    import importlib

    t0 = time.monotonic()
    module = importlib.import_module(f"benchmarks.{name}")
    result = module.run(quick)
    sections = result if isinstance(result, list) else [result]
    for s in sections:
        s.elapsed_s = s.elapsed_s or time.monotonic() - t0
    with open(out, "w") as f:
        json.dump([s.to_dict() for s in sections], f)


def run_module(name: str, quick: bool, timeout_s: float) -> tuple[list[Section], float]:
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    cmd = [sys.executable, "-m", "benchmarks.run_all", "--child", name, "--child-out", out]
    if quick:
        cmd.append("--quick")
    err_tail = ""
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sys.stderr, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None
        tail: list[str] = []
        for line in proc.stderr:  # progress lines pass through as they come
            sys.stderr.write(f"  {name} | {line}")
            sys.stderr.flush()
            tail = [*tail, line][-30:]
            if time.monotonic() - t0 > timeout_s:
                proc.kill()
                tail.append(f"killed after {timeout_s:.0f} s\n")
                break
        rc = proc.wait()
        err_tail = "".join(tail)
        if rc == 0 and os.path.getsize(out):
            with open(out) as f:
                return [Section.from_dict(d) for d in json.load(f)], time.monotonic() - t0
    finally:
        os.unlink(out)
    failed = Section(f"{name}: FAILED", f"python -m benchmarks.{name}" +
                     (" --quick" if quick else ""), "",
                     ["The module did not finish; last lines of its output:",
                      "```\n" + err_tail.strip()[-3000:] + "\n```"])
    return [failed], time.monotonic() - t0


def write_results(path: pathlib.Path, sections: list[tuple[str, Section]], quick: bool,
                  total_s: float) -> None:
    m = machine_info()
    cmd = "python -m benchmarks.run_all" + (" --quick" if quick else "")
    lines = [
        "# Switchyard benchmarks",
        "",
        "Regenerated by one command (numbers are measurements of this run, not assertions):",
        "",
        "```", cmd, "```", "",
        md_table(["machine", ""], [
            ["date", m["date"]], ["CPU", m["cpu"]], ["cores", m["cores"]],
            ["memory", m["memory"]], ["kernel", m["kernel"]], ["python", m["python"]],
            ["grpcio", m["grpcio"]], ["mode", "quick" if quick else "full"],
            ["total time", f"{total_s:.0f} s"]], "ll"),
        "",
        "Contents: " + ", ".join(f"[{s.title}](#{_anchor(s.title)})" for _, s in sections),
        "",
    ]
    for _, s in sections:
        lines.append(s.markdown())
    path.write_text("\n".join(lines))


def _anchor(title: str) -> str:
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return keep.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the ~2-3 minute version")
    p.add_argument("--only", default="", help="comma-separated module names")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "RESULTS.md"))
    p.add_argument("--timeout", type=float, default=900, help="per module, seconds")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args.child, args.quick, args.child_out)
        return 0
    names = discover()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        names = [n for n in names if n in wanted]
    t0 = time.monotonic()
    print(f"benchmarks ({'quick' if args.quick else 'full'}): " + ", ".join(
        f"{n} ({_estimate(_source(n), args.quick)})" for n in names),
        file=sys.stderr, flush=True)
    done: list[tuple[str, Section]] = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} …", file=sys.stderr, flush=True)
        sections, took = run_module(name, args.quick, args.timeout)
        done += [(name, s) for s in sections]
        status = "FAILED" if any(s.title.endswith("FAILED") for s in sections) else "ok"
        print(f"[{i}/{len(names)}] {name}: {status} in {took:.0f} s "
              f"(total {time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        # Written after every module, so a long run leaves partial results behind.
        write_results(pathlib.Path(args.out), done, args.quick, time.monotonic() - t0)
    print(f"wrote {args.out} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0 if all(not s.title.endswith("FAILED") for _, s in done) else 1


if __name__ == "__main__":
    sys.exit(main())
