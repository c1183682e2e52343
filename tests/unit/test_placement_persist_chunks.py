"""The learned-state file written in pieces (issue 15): at 10,000 backends one dump held
placement's event loop for 0.2-0.9 s every 10 s; ``persist.dump_json`` gathers and encodes a
chunk of backends per loop turn and must write what ``dump`` describes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from placement.fleet import FleetState, TelemetrySnapshot, VariantStats
from placement.hardware import GpuState
from placement.model import Backend, Variant
from services.placement import persist

N = 23


def _fleet() -> FleetState:
    fleet = FleetState()
    for i in range(N):
        bid = f"be-{i:02d}"
        fleet.register(Backend(id=bid, endpoint=f"h:{i}", cloud="aws", region="r-east",
                               accelerator="gpu-cheap", accelerator_count=1,
                               price_class="on-demand",
                               variants=(Variant("summarize-small", "summarize", 0.7),)))
        for t in (1, 2):
            fleet.ingest(bid, TelemetrySnapshot(
                True, True, (GpuState(0, mem_free_bytes=1 << 30, mem_total_bytes=2 << 30),),
                {"summarize-small": VariantStats(20 * t * (i + 1), 20 * t, 0, 10 ** 6 * t,
                                                 4 * 10 ** 7 * t * (i + 1))},
                sent_ms=1000 * t), now=float(t))
    fleet.observe("r-east", "be-03/summarize-small", 50, 42.0, now=2.0)
    fleet.observe_use("r-east", "edge-1", "be-04/summarize-small", 3.5, now=2.0)
    return fleet


async def test_the_pieces_make_the_file_dump_describes_with_the_loop_free_between() -> None:
    fleet = _fleet()
    turns = 0
    stop = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    text = await persist.dump_json(fleet, 3.0, 1000.0, chunk=5)
    stop.set()
    await task
    whole = json.loads(json.dumps(persist.dump(fleet, 3.0, 1000.0)))
    assert json.loads(text) == whole
    assert turns >= N // 5  # other work ran between the pieces
    restored = FleetState()
    assert persist.restore(restored, json.loads(text), 3.0, 1000.0) == N
    assert restored.backends["be-07"].loads == fleet.backends["be-07"].loads


async def test_registrations_are_encoded_once_and_anew_when_they_change() -> None:
    fleet = _fleet()
    kept: dict[str, tuple[Backend, str]] = {}
    first = json.loads(await persist.dump_json(fleet, 3.0, 1000.0, registrations=kept))
    assert set(kept) == set(fleet.backends)
    moved = replace(fleet.backends["be-01"].backend, endpoint="h:moved")
    fleet.register(moved)
    fleet.deregister("be-02")
    second = json.loads(await persist.dump_json(fleet, 3.0, 1000.0, registrations=kept))
    assert "be-02" not in second["backends"] and "be-02" not in kept
    assert second["backends"]["be-01"]["backend"] != first["backends"]["be-01"]["backend"]
    assert second["backends"]["be-05"]["backend"] == first["backends"]["be-05"]["backend"]
    restored = FleetState()
    persist.restore(restored, second, 3.0, 1000.0)
    assert restored.backends["be-01"].backend.endpoint == "h:moved"
