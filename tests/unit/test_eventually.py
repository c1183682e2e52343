"""The tests' one way to wait for a condition (tests/mesh_harness.py): it returns as soon as
the condition holds, awaits a condition that is a coroutine (an RPC reading the state), and
fails naming what it waited for."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.mesh_harness import eventually, eventually_sync


async def test_returns_once_another_task_makes_the_condition_true() -> None:
    seen: list[int] = []

    async def other() -> None:
        for i in range(3):
            await asyncio.sleep(0)  # pacing: yield to the waiter between steps
            seen.append(i)

    task = asyncio.create_task(other())
    await eventually(lambda: len(seen) == 3, 5, poll_s=0.001)
    await task
    assert seen == [0, 1, 2]


async def test_awaits_a_coroutine_condition() -> None:
    polls: list[int] = []

    async def read() -> bool:  # stands in for an RPC that reads the state
        polls.append(1)
        return len(polls) >= 3

    await eventually(read, 5, poll_s=0.001)
    assert len(polls) == 3


async def test_a_coroutine_condition_that_stays_false_fails_naming_it() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"not within 0\.05 s: the table matched"):
        await eventually(never, 0.05, "the table matched", poll_s=0.01)


def test_sync_wait_sees_a_thread_set_the_condition_and_fails_otherwise() -> None:
    done = threading.Event()
    threading.Thread(target=done.set).start()
    eventually_sync(done.is_set, 5, poll_s=0.001)
    with pytest.raises(AssertionError, match=r"not within 0\.05 s: never"):
        eventually_sync(lambda: False, 0.05, "never", poll_s=0.01)
