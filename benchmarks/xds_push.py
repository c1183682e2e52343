"""Envoy edges' control plane: from a placement change to Envoy using it, and bytes per change.

A real Envoy edge (1 worker) bootstrapped with only placement's address; placement (in the
measuring process, so its ADS sessions can be read) serves delta ADS; two real Triton
backends serve the model, the spot one cheaper, and a third real Triton (``fresh``) that
placement does not know at start. Changes come in cycles of three, each measured from the
start of the RPC that makes it:

- ``drain/restore``: the cheap backend drained, then restored, through placement's own
  ``SetAvailability`` (an operator change, published at once);
- ``new deployment``: a backend placement never saw (``new-<i>``, Triton ``fresh``, priced
  ``reserved``: cheaper than both) registered through ``RegisterBackend`` (published after
  the hub's coalescing wait, as any registration), so the route's first deployment is a
  cluster Envoy does not hold yet. Then it is deregistered and the calls are back on the
  cheap backend before the next cycle (not measured).

For each change:

- ``ack``: until Envoy has ACKed the last response the change caused (the responses sent
  after Envoy's ACK of a held one included: a new deployment cluster is sent alone and what
  names it only after Envoy's ACK, ``services/xds/pushes.py``, when the placement has it);
- ``first_call``: until a tritonclient call through the Envoy is served by the deployment
  the change should move calls to (calls back to back until one is; a failed call is
  counted, not retried differently);
- ``bytes``: of the xDS responses the change caused;
- ``warm_hold``: how long placement held the rest of the change for Envoy to warm a new
  cluster (``AdsServer.warm_waits``; none in a placement without the hold).

    python -m benchmarks.xds_push [--quick] [--before <export of an older commit>]

``--before``: the same measurement first in another checkout (a ``git archive`` export with
``.venv`` linked): this file runs there as a script, importing that checkout's ``services``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ESTIMATE_S = (60, 240)
HERE = os.path.abspath(__file__)
KINDS = ("drain/restore", "new deployment")
METRICS = (("ack_ms", "ack", "ms"), ("first_call_ms", "first_call", "ms"),
           ("bytes", "bytes", "B"), ("warm_hold_ms", "warm_hold", "ms"))

PRICES = """
[[prices]]
accelerator = "gpu"
cloud = "aws"
region = "*"
price_class = "on-demand"
usd_per_gpu_hour = 2.0

[[prices]]
accelerator = "gpu"
cloud = "aws"
region = "*"
price_class = "spot"
usd_per_gpu_hour = 0.5

[[prices]]
accelerator = "gpu"
cloud = "aws"
region = "*"
price_class = "reserved"
usd_per_gpu_hour = 0.25
"""


def mesh(tmp: pathlib.Path, fresh: bool = False) -> Any:
    """The mesh placement runs (``fresh``: with the backend only registered later, for its
    Triton's repository and its registration)."""
    from services.config import MeshConfig
    from services.ports import free_port

    (tmp / "prices.toml").write_text(PRICES)
    backends: list[dict[str, Any]] = [
        {"id": "cheap", "region": "r1", "accelerator": "gpu", "price_class": "spot",
         "grpc_port": free_port(), "variants": ["tiny-v1"]},
        {"id": "dear", "region": "r1", "accelerator": "gpu", "grpc_port": free_port(),
         "variants": ["tiny-v1"]}]
    if fresh:
        backends = [{"id": "fresh", "region": "r1", "accelerator": "gpu",
                     "price_class": "reserved", "grpc_port": free_port(),
                     "variants": ["tiny-v1"]}]
    raw: dict[str, Any] = {
        "base_dir": str(tmp), "run_dir": str(tmp / "run"), "prices_file": "prices.toml",
        "regions": [{"name": "r1", "cloud": "aws"}],
        "models": [{"name": "tiny", "default_slo_ms": 1000, "variants": [
            {"name": "tiny-v1", "quality": 0.8, "matmul_n": 8, "matmul_iters": 1}]}],
        "backends": backends,
        "edges": [{"id": "edge-r1", "region": "r1", "port": free_port()}],
        "placement": {"port": 0},
        "wan": {"emulate": False},
    }
    return MeshConfig.model_validate(raw)


def served_by(address: str) -> str:
    """The deployment that served one call through the Envoy ("" when the call failed)."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    from services.demo import infer_with_trailers
    from tests.mesh_harness import summarize_input

    client = tc.InferenceServerClient(address)
    try:
        _, trailers = infer_with_trailers(client, "tiny", [summarize_input()], (), 5.0)
    except InferenceServerException:
        return ""
    finally:
        client.close()
    return trailers.get("x-served-by", "")


async def measure(cycles: int) -> dict[str, dict[str, list[float]]]:
    """Per change kind, per metric, one value per change."""
    import grpc

    from benchmarks.common import progress
    from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
    from services.backends.triton import TritonProcess
    from services.convert import backends_from_config
    from services.edge.envoy.launcher import EnvoyEdge, prepare
    from services.placement.main import start_placement
    from tests.mesh_harness import eventually

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-xds-"))
    cfg, fresh_cfg = mesh(tmp), mesh(tmp, fresh=True)
    (fresh,) = backends_from_config(fresh_cfg)
    tritons = [TritonProcess.for_backend(cfg, b, tmp / b.id) for b in cfg.backends]
    tritons.append(TritonProcess.for_backend(fresh_cfg, fresh_cfg.backends[0], tmp / "fresh"))
    for t in tritons:
        t.start()
    placement = await start_placement(cfg, port=0, metrics_port=0)
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{placement.port}"],
                              run_dir=tmp)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    keys = [m for m, _, _ in METRICS] + ["rounds", "failed_calls"]
    out: dict[str, dict[str, list[float]]] = {k: {m: [] for m in keys} for k in KINDS}
    try:
        for t in tritons:
            await t.wait_ready_async(120)
        envoy.start()
        await eventually(envoy.ready, 30, "Envoy listens")
        ads = placement.ads
        assert ads is not None
        (session,) = ads.sessions
        # every reply of Envoy's that leaves nothing outstanding: (when, responses sent by then)
        clear: list[tuple[float, int]] = []

        def on_reply(s: object) -> None:
            if s is session and not session.replies.outstanding:
                clear.append((time.perf_counter(), ads.pushes))

        ads.on_reply = on_reply
        waits = getattr(ads, "warm_waits", None)  # the hold's durations, where there is one

        async def change(kind: str, rpc: Callable[[], Any], want: str) -> None:
            n_clear, pushes0, sent0 = len(clear), ads.pushes, ads.pushed_bytes
            holds0 = len(waits) if waits is not None else 0
            failed = 0
            t0 = time.perf_counter()
            await rpc()
            while (got := await asyncio.to_thread(served_by, envoy.address)) != want:
                failed += got == ""
            first = (time.perf_counter() - t0) * 1e3
            # everything the change caused answered: pushes stopped and nothing outstanding
            await eventually(lambda: ads.pushes > pushes0 and not session.replies.outstanding
                             and clear and clear[-1][1] == ads.pushes, 10,
                             f"Envoy ACKs the {kind} change")
            assert not session.replies.nacks, session.replies.nacks
            last = ads.pushes
            acked = min(t for t, p in clear[n_clear:] if p == last)
            r = out[kind]
            r["ack_ms"].append((acked - t0) * 1e3)
            r["first_call_ms"].append(first)
            r["bytes"].append(ads.pushed_bytes - sent0)
            r["rounds"].append(len({p for _, p in clear[n_clear:] if pushes0 < p <= last}))
            r["failed_calls"].append(failed)
            if waits is not None:
                r["warm_hold_ms"] += [w * 1e3 for w in list(waits)[holds0:]]

        progress(f"{cycles} cycles: drain, restore the cheap backend; register a new one")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{placement.port}") as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)

            def availability(state: int) -> Callable[[], Any]:
                return lambda: stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
                    scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="cheap",
                    availability=state))

            async def on_cheap() -> bool:
                return await asyncio.to_thread(served_by, envoy.address) == "cheap/tiny-v1"

            for i in range(cycles):
                await change(KINDS[0], availability(fleet_pb2.AVAILABILITY_DRAINED),
                             "dear/tiny-v1")
                await change(KINDS[0], availability(fleet_pb2.AVAILABILITY_ACTIVE),
                             "cheap/tiny-v1")
                b = fleet_pb2.Backend()
                b.CopyFrom(fresh)
                b.id = f"new-{i}"
                register = placement_pb2.RegisterBackendRequest(backend=b)
                await change(KINDS[1], lambda: stub.RegisterBackend(register),
                             f"new-{i}/tiny-v1")
                await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
                    backend_id=b.id))
                await eventually(on_cheap, 30, "calls back on the cheap backend")
    finally:
        envoy.stop()
        await placement.stop(0.5)
        for t in tritons:
            t.stop(5)
    return out


def measure_in(root: str, cycles: int) -> dict[str, dict[str, list[float]]]:
    """One measurement in a fresh Python process running ``root``'s services."""
    res = subprocess.run([sys.executable, HERE, "--role", "measure", "--cycles", str(cycles)],
                         cwd=root, env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.PIPE,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"measurement in {root} failed (exit {res.returncode})")
    result: dict[str, dict[str, list[float]]] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def rows_for(label: str | None, out: dict[str, dict[str, list[float]]]) -> list[list[object]]:
    from benchmarks.common import percentile

    rows: list[list[object]] = []
    for kind in KINDS:
        for key, name, unit in METRICS:
            v = sorted(out[kind][key])
            if not v:
                continue
            rows.append([*([label] if label else []), kind, name, unit, len(v),
                         percentile(v, 50), percentile(v, 99), max(v)])
    return rows


def _p50(out: dict[str, dict[str, list[float]]], kind: str, key: str) -> float:
    """The table's p50 of one row."""
    from benchmarks.common import percentile

    v = sorted(out[kind][key])
    return percentile(v, 50) if v else float("nan")


def verdicts(runs: list[tuple[str, dict[str, dict[str, list[float]]]]]) -> list[str]:
    """The prose under the table, computed from its rows: per kind, each run's p50s and
    ACK rounds, and before → after where there are both."""
    notes = []
    for kind in KINDS:
        for label, out in runs:
            r = out[kind]
            holds = r["warm_hold_ms"]
            notes.append(
                f"{label}, {kind}: ack p50 {_p50(out, kind, 'ack_ms'):.1f} ms, first call p50 "
                f"{_p50(out, kind, 'first_call_ms'):.1f} ms (max "
                f"{max(r['first_call_ms']):.1f}), {statistics.median(r['rounds']):.0f} ACK "
                f"round(s) per change (max {max(r['rounds']):.0f}), "
                + (f"{len(holds)} warm-first holds (p50 {_p50(out, kind, 'warm_hold_ms'):.1f} ms)"
                   if holds else "no warm-first hold")
                + f", {sum(r['failed_calls']):.0f} failed calls.")
        if len(runs) == 2:
            (_, b), (_, a) = runs
            parts = []
            for key, name in (("ack_ms", "ack"), ("first_call_ms", "first call")):
                pb, pa = _p50(b, kind, key), _p50(a, kind, key)
                parts.append(f"{name} p50 {pb:.1f} → {pa:.1f} ms ({pa - pb:+.1f} ms, "
                             f"{pa / pb:.2f}×)")
            notes.append(f"{kind}, before → after in one run: " + "; ".join(parts) + ".")
    return notes


def run(quick: bool, before: str = "") -> Any:
    from benchmarks.common import ROOT, Section, command_for, md_table, progress

    cycles = 10 if quick else 50
    t0 = time.monotonic()
    variants = [("before", before), ("after", ROOT)] if before else [("", ROOT)]
    runs = []
    load0 = os.getloadavg()[0]
    for label, root in variants:
        progress(f"xds_push: {label or 'this checkout'} ({root})")
        runs.append((label or "this checkout", measure_in(root, cycles)))
    rows = [r for label, out in runs for r in rows_for(label if before else None, out)]
    table = md_table([*(["placement"] if before else []), "change", "from the RPC to", "unit",
                      "changes", "p50", "p99", "max"], rows,
                     "l" * (3 + bool(before)) + "rrrr")
    notes = [
        "Each cycle: the cheap backend drained, then restored (`SetAvailability`: placement "
        "publishes at once), then a backend placement never saw registered "
        "(`RegisterBackend`: published after the hub's coalescing wait) as the cheapest, "
        "then deregistered (not measured). `drain/restore` are the rows of the earlier "
        "subsections (alternate drains and restores); `new deployment` needs a deployment "
        "cluster Envoy does not hold yet.",
        "`ack`: until Envoy ACKed the last response the change caused; `first_call`: until a "
        "call through the Envoy was served by the deployment the change moves calls to; "
        "`warm_hold`: how long placement held the rest of a change for Envoy to warm a new "
        "cluster (its first active health check), part of `ack`.",
        "Placement runs in the measuring process (an ADS hook marks the ACKs); Envoy, the "
        "three Tritons and tritonclient calls are real; everything shares the host's "
        f"{os.cpu_count()} cores with whatever else runs (load average over 1 min: "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end): compare rows of "
        "one run.",
        *verdicts(runs),
    ]
    return Section("Envoy edges: placement change to Envoy using it (delta ADS)",
                   command_for(__name__, quick)
                   + (" --before <export of the old commit>" if before else ""),
                   table, notes, elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--role", default="bench", choices=["bench", "measure"])
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--before", default="")
    args = p.parse_args()
    if args.role == "measure":
        print(json.dumps(asyncio.run(measure(args.cycles))), flush=True)
        return
    print(run(args.quick, args.before).markdown())


if __name__ == "__main__":
    main()
