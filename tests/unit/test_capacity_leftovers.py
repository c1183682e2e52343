"""A restarted placement forgets the managed instances of the one before it (issue 13).

The learned state a placement restores at start (``services.placement.persist``) carries
every backend it knew, the capacity loop's instances too; their tritonservers went with the
previous process. Seen in the capacity demo: the dead ``use1-l4-1/summarize-large`` was in
the first route tables of the next run (edges sent calls to it until health checks failed),
and its restored call rate read as demand for quality 0.9, so the first plan loaded the large
variant with no call asking for it and the demo showed no swap.
"""

from __future__ import annotations

import pathlib

import pytest

from placement.forecast import ClassKey
from services.capacity.provider import Instance
from tests.unit.test_capacity_loop import Rig


def leftover(iid: str) -> Instance:
    return Instance(iid, "east", "127.0.0.1:9", "http://127.0.0.1:9/metrics")


async def test_managed_instances_the_provider_does_not_run_are_forgotten_at_start(
        tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    # the previous placement's instance, as restored: registered, with a call rate
    await rig.gate.start(leftover("east-7"), "large")
    rig.calls("east-7/large", 5.0)
    rig.calls("static-1/small", 2.0)
    assert "east-7" in rig.routed()
    published: list[int] = []
    rig.loop._publish = lambda: published.append(1)

    assert rig.loop.forget_leftovers() == ["east-7"]
    assert "east-7" not in rig.routed()
    assert "east-7/large" not in rig.service.fleet.use
    assert published == [1]  # the edges stop routing to it now, not at the next rebuild
    # what is left is the static backend's demand only: no class at the dead one's quality
    assert set(rig.loop.observed_rates()) == {ClassKey("summarize", 0.7, 300, "r-east")}
    assert rig.loop.forget_leftovers() == []  # nothing twice


async def test_the_providers_own_instances_and_other_backends_are_kept(
        tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    (mine,) = await rig.provider.add("east", 1)
    await rig.gate.start(mine, "small")
    await rig.gate.start(leftover("eastern-2"), "small")  # another pool's name, not ours
    rig.calls(f"{mine.id}/small", 1.0)
    rig.loop._publish = lambda: pytest.fail("nothing to forget: no push")

    assert rig.loop.forget_leftovers() == []
    assert set(rig.routed()) == {mine.id, "eastern-2"}
    assert f"{mine.id}/small" in rig.service.fleet.use
