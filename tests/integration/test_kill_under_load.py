"""Killing the chosen backend's real Triton process under load loses no call whose deadline
allows a retry (issue: core, item 9)."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import threading
import time
from collections import Counter

import pytest
from tritonclient.utils import InferenceServerException

from tests.mesh_harness import call, eventually, mesh_config, running_mesh, start_tritons, warm

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


# An SLO every backend meets with room: under a tight one (400 ms) a loaded host's few slow
# calls teach the edge a miss margin (placement.feedback) that moves the class off the
# cheapest backend on purpose, so "the cheapest serves" would measure the host's load.
LOOSE_SLO_MS = "2000"


async def test_sigkill_of_the_serving_backend_loses_no_call(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    tritons = start_tritons(cfg, tmp_path / "tritons")
    try:
        warm([p.endpoint for p in tritons.values()], ["summarize-small", "summarize-large"])
        async with running_mesh(cfg, tritons) as mesh:
            served: Counter[str] = Counter()
            after_kill: Counter[str] = Counter()
            failures: list[str] = []
            killed_at: list[float] = []
            stop = threading.Event()

            def client() -> None:
                deadline = time.monotonic() + 20  # bounded even if something hangs
                while not stop.is_set() and time.monotonic() < deadline:
                    started = time.monotonic()
                    try:
                        tr = call(mesh, [("x-slo-ms", LOOSE_SLO_MS)], timeout_s=2.0)
                    except InferenceServerException as exc:
                        failures.append(f"{exc.status()}: {exc.message()}")
                        continue
                    served[tr["x-served-by"]] += 1
                    if killed_at and started > killed_at[0]:
                        after_kill[tr["x-served-by"]] += 1

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            await eventually(lambda: sum(served.values()) >= 20, 10, "load under way")
            victim = served.most_common(1)[0][0].split("/")[0]
            assert victim == "central-cheap", served  # the cheapest takes loose-SLO traffic
            tritons[victim].kill(signal.SIGKILL)
            killed_at.append(time.monotonic())
            await eventually(lambda: sum(after_kill.values()) > 20, 10,
                             "calls started after the kill answered")
            stop.set()
            for t in threads:
                await asyncio.to_thread(t.join, 30)
            assert failures == []
            assert sum(after_kill.values()) > 20
            late = [d for d in after_kill if d.startswith(victim)]
            assert not late, after_kill  # calls started after the kill never reach the dead process
            assert mesh.edge.router.store.candidates  # and the edge still has its table
            blocked = {d.split("/")[0] for d in mesh.edge.router.blocked}
            assert victim in blocked
    finally:
        for p in tritons.values():
            p.stop(3)
