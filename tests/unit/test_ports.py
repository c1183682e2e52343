"""Port picking: distinct, bindable, outside the kernel's ephemeral range, no quick repeats."""

from __future__ import annotations

import socket

import pytest

from services import ports


def test_consecutive_picks_never_repeat_and_stay_below_the_ephemeral_range() -> None:
    low = ports._ephemeral_low()
    picked = [ports.free_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)
    assert all(p < low for p in picked)


def test_consecutive_block_is_consecutive_and_bindable() -> None:
    block = ports.free_ports(8, consecutive=True)
    assert block == list(range(block[0], block[0] + 8))
    for p in block:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


class Scripted:
    """Draws the given candidates in order (instead of at random)."""

    def __init__(self, *draws: int) -> None:
        self.draws = list(draws)

    def sample(self, _population: range, n: int) -> list[int]:
        return [self.draws.pop(0) for _ in range(n)]


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    busy, free = ports.free_ports(2)
    ports._issued.difference_update({busy, free})
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        monkeypatch.setattr(ports, "_rng", Scripted(busy, free))
        assert ports.free_port() == free


def test_many_configs_in_a_loop_do_not_exhaust_the_range() -> None:
    for _ in range(3000):
        ports.free_ports(6)
    assert len(ports._issued) <= ports._RECENT
