"""Route publishes in a steady mesh: how often placement republishes its tables, and why.

    python -m benchmarks.publish_churn [--quick] [--seconds 40] [--rounds 2]

Real parts: the mesh of ``tests/integration/test_capacity_mesh.py`` (real Tritons, placement,
agent and Python edge on 127.0.0.1), its pool grown to two identical instances of
summarize-large by the capacity actor, and 3 tritonclient callers sending calls only those
may serve, without end. Nothing an operator does changes during the measurement. Each round
runs every variant for ``--seconds`` in turn on the same running placement (interleaved, so
the host's load falls alike on each), set on it as it runs:

- ``fixed``: the fixed bands alone (``bands.NOISE_K`` 0, ``estimate_every_s`` 0): the code
  before;
- ``jitter``: the row's jitter band (``NOISE_K`` 4), no cadence;
- ``cadence``: learned changes at most once every 5 s, fixed bands;
- ``both``: jitter band and cadence (placement's default).

Counted: publishes that offered rows to the watchers (``RouteHub.on_published``) and, per
reason (``Push.reasons``), the publishes that carried it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import pathlib
import tempfile
import time
from dataclasses import dataclass

from benchmarks.common import Section, command_for, md_table
from services.config import MeshConfig
from services.placement import bands
from services.placement.hub import Push
from tests.integration.test_capacity_mesh import CAPACITY, QualityLoad, two_instances
from tests.mesh_harness import Mesh, mesh_config, running_mesh, running_tritons

VARIANTS = {"fixed": (0.0, 0.0), "jitter": (4.0, 0.0), "cadence": (0.0, 5.0),
            "both": (4.0, 5.0)}


@dataclass
class Row:
    variant: str
    round: int
    publishes: int
    per_min: float
    calls: int
    reasons: collections.Counter[str]


def _config(tmp: pathlib.Path) -> MeshConfig:
    base = mesh_config(tmp).model_dump()
    base["backends"] = [b for b in base["backends"] if b["id"] == "east-fast"]
    return MeshConfig.model_validate({**base, "capacity": CAPACITY})


async def _measure(mesh: Mesh, seconds: float, rounds: int) -> tuple[list[Row], int]:
    hub = mesh.placement.service.hub
    kept = (bands.NOISE_K, hub.estimate_every_s)
    pushes: list[Push] = []
    chained = hub.on_published

    def published(p: Push) -> None:
        pushes.append(p)
        if chained is not None:
            chained(p)

    await two_instances(mesh)
    load = QualityLoad(mesh)
    hub.on_published = published
    rows: list[Row] = []
    try:
        await asyncio.sleep(5.0)  # both instances serving
        for r in range(rounds):
            for name, (k, every) in VARIANTS.items():
                bands.NOISE_K, hub.estimate_every_s = k, every
                await asyncio.sleep(1.0)  # what the variant before deferred goes out
                pushes.clear()
                calls, t0 = load.total(), time.monotonic()
                await asyncio.sleep(seconds)
                span = time.monotonic() - t0
                reasons: collections.Counter[str] = collections.Counter()
                for p in pushes:
                    reasons.update(p.reasons.keys())
                rows.append(Row(name, r + 1, len(pushes), len(pushes) * 60 / span,
                                load.total() - calls, reasons))
    finally:
        bands.NOISE_K, hub.estimate_every_s = kept
        hub.on_published = chained
        await load.stop()
    return rows, len(load.failures)


async def _run(seconds: float, rounds: int) -> tuple[list[Row], int]:
    with tempfile.TemporaryDirectory(prefix="publish-churn-") as d:
        tmp = pathlib.Path(d)
        (tmp / "mesh").mkdir()
        cfg = _config(tmp / "mesh")
        with running_tritons(cfg, tmp / "tritons") as tritons:
            async with running_mesh(cfg, tritons) as mesh:
                return await _measure(mesh, seconds, rounds)


def run(quick: bool, seconds: float, rounds: int) -> Section:
    t0 = time.monotonic()
    if quick:
        seconds, rounds = min(seconds, 20.0), 1
    out, failures = asyncio.run(_run(seconds, rounds))
    table = md_table(
        ["variant", "round", "publishes", "per minute", "calls served", "publishes by reason"],
        [[r.variant, r.round, r.publishes, f"{r.per_min:.1f}", r.calls,
          ", ".join(f"{k} {v}" for k, v in r.reasons.most_common(5))] for r in out])
    mean = {name: sum(r.per_min for r in out if r.variant == name)
            / max(1, sum(1 for r in out if r.variant == name)) for name in VARIANTS}
    notes = [f"Mean publishes a minute over {rounds} round(s) of {seconds:.0f} s: "
             + ", ".join(f"{n} {v:.1f}" for n, v in mean.items())
             + f"; the default (both) {mean['fixed'] / max(mean['both'], 1e-9):.1f}x fewer "
             f"than the fixed bands. Failed calls over the run: {failures}."]
    command = command_for(__name__, quick) + ("" if quick else
                                              f" --seconds {seconds:.0f} --rounds {rounds}")
    return Section(title="Control plane: route publishes in a steady mesh", command=command,
                   table=table, notes=notes, elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(run(args.quick, args.seconds, args.rounds).markdown())


if __name__ == "__main__":
    main()
