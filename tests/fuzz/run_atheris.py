"""A bounded coverage-guided (atheris / libFuzzer) campaign over the edge's input readers.

    .venv/bin/python -m tests.fuzz.run_atheris --seconds 60            # every target
    .venv/bin/python -m tests.fuzz.run_atheris --target wire --seconds 30

Each target runs in its own process (libFuzzer exits when done) for ``--seconds``; the
driver parses libFuzzer's summary and writes ``tests/fuzz/atheris_stats.json`` (runs,
seconds, coverage, crashes). A crash leaves ``crash-*`` input files in ``--artifacts``.
Targets: ``wire`` (scan/rewrite vs. the real protobuf parser) and ``hints`` (the parser).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
TARGETS = ("wire", "hints")


def _wire_target() -> None:
    import atheris

    with atheris.instrument_imports():
        from services.edge.wire import rewrite_model_name, scan_model_name
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2

    from placement.errors import InvalidRequest

    def one(data: bytes) -> None:
        try:
            name = scan_model_name(data)
        except InvalidRequest:
            return
        try:
            msg = service_pb2.ModelInferRequest.FromString(data)
        except DecodeError:
            msg = None
        if msg is not None and msg.model_name != name:
            raise AssertionError(f"scanner read {name!r}, protobuf {msg.model_name!r}")
        if scan_model_name(rewrite_model_name(data, name, "v-" + name[:8])) != "v-" + name[:8]:
            raise AssertionError("rewrite then scan lost the variant")

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def _hints_target() -> None:
    import atheris

    with atheris.instrument_imports():
        from services.edge.hints import parse
    from placement.errors import InvalidHint

    headers = ["x-slo-ms", "x-min-quality", "x-max-cost-usd", "x-tenant", "x-allowed-regions",
               "x-request-id", "x-fail-fast", "x-routing-profile", "x-other", "authorization"]
    regions = frozenset({"r-east", "r-west"})

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        md: list[tuple[str, str | bytes]] = []
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            key = headers[fdp.ConsumeIntInRange(0, len(headers) - 1)]
            md.append((key, fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))))
        try:
            parse(md, regions, ("cheapest", "fastest"))
        except InvalidHint as exc:
            if exc.header not in {k for k, _ in md}:
                raise AssertionError(f"InvalidHint names {exc.header!r}, not a sent header") from exc

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


_SUMMARY = re.compile(r"Done (\d+) runs in (\d+) second")
_COV = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)")


def drive(targets: list[str], seconds: int, artifacts: pathlib.Path, out: pathlib.Path) -> int:
    artifacts.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, object]] = {}
    failed = 0
    for t in targets:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.run_atheris", "--worker", t,
             f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/{t}-",
             "-print_final_stats=1", "-rss_limit_mb=4096", "-timeout=5"],
            capture_output=True, text=True, cwd=HERE.parent.parent, check=False)
        log = proc.stderr
        done = _SUMMARY.search(log)
        cov = _COV.findall(log)
        crashed = proc.returncode != 0
        failed += crashed
        stats[t] = {"runs": int(done.group(1)) if done else None,
                    "seconds": round(time.monotonic() - t0, 1),
                    "coverage_edges": int(cov[-1][1]) if cov else None,
                    "features": int(cov[-1][2]) if cov else None,
                    "exit_code": proc.returncode, "crashed": crashed,
                    "tail": log.strip().splitlines()[-12:] if crashed else []}
        print(f"{t}: {stats[t]['runs']} runs in {stats[t]['seconds']} s, "
              f"cov {stats[t]['coverage_edges']}, {'CRASH' if crashed else 'no crash'}")
    out.write_text(json.dumps({"seconds_per_target": seconds, "targets": stats}, indent=2) + "\n")
    print(f"stats written to {out}")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        target = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        {"wire": _wire_target, "hints": _hints_target}[target]()
        return 0
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=TARGETS, action="append")
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("/tmp/switchyard-fuzz"))  # noqa: S108
    p.add_argument("--out", type=pathlib.Path, default=HERE / "atheris_stats.json")
    args = p.parse_args()
    return drive(args.target or list(TARGETS), args.seconds, args.artifacts, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
