"""`placement.queueing.erlang_c` at any number of servers (the old power-sum form was NaN past
~750 servers, which a registration's max_concurrency could reach)."""

import math

import pytest

from placement.queueing import erlang_c, wait_ms


def _power_sum(c: int, rho: float) -> float:
    """The textbook form, a^c/c!/(1−ρ) over Σ_{j<c} a^j/j! + that, exact at few servers."""
    a = c * rho
    below = sum(a**j / math.factorial(j) for j in range(c))
    top = a**c / math.factorial(c) / (1.0 - rho)
    return top / (below + top)


@pytest.mark.parametrize("c", [1, 2, 3, 8, 16, 40])
@pytest.mark.parametrize("rho", [0.05, 0.5, 0.8, 0.95, 0.999])
def test_matches_the_textbook_form_at_few_servers(c: int, rho: float) -> None:
    assert erlang_c(c, rho) == pytest.approx(_power_sum(c, rho), rel=1e-9)


def test_one_server_waits_with_the_probability_of_its_utilisation() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)


@pytest.mark.parametrize("c", [750, 800, 2_000, 100_000])
def test_finite_and_a_probability_at_many_servers(c: int) -> None:
    for rho in (0.5, 0.9, 0.99, 0.9999):
        p = erlang_c(c, rho)
        assert math.isfinite(p) and 0.0 <= p <= 1.0, (c, rho, p)
    # More servers at the same utilisation: a call waits less often (pooling).
    assert erlang_c(c, 0.9) < erlang_c(c // 2, 0.9)
    assert math.isfinite(wait_ms(50.0, c, 0.99))


def test_edges_of_the_utilisation_range() -> None:
    assert erlang_c(800, 0.0) == 0.0
    assert erlang_c(800, 1.0) == 1.0
    assert erlang_c(800, 1.5) == 1.0
