"""M/M/c waiting times (Erlang C): the chance a call waits, and a tail quantile of its wait.

A backend with ``c`` servers at utilisation ``ρ``: an arriving call waits with probability
``C(c, ρ)`` (Erlang C), and a call that waits does so for an exponential time of rate
``c μ (1 − ρ)`` (``μ = 1 / service``). So ``P(W > t) = C e^{−c μ (1 − ρ) t}``, and the wait
exceeded by a fraction ``tail`` of calls is 0 while ``C <= tail``, else
``ln(C / tail) × service / (c (1 − ρ))``: few servers and a high utilisation leave a tight
call no room, many servers keep it near zero.

``TAIL`` is 1 − the attainment target (99.5 % of calls within their SLO), not the 5 % of a
p95: a call's p95 estimate already spends 5 % on the deployment's own spread, so a wait the
edge adds on top (a borrowed slot) may only add misses the target leaves room for.
"""

from __future__ import annotations

import math

TAIL = 0.005


def erlang_c(servers: int, utilisation: float) -> float:
    """P(an arriving call waits) in an M/M/c queue with ``servers`` at ``utilisation``."""
    c = max(servers, 1)
    rho = min(max(utilisation, 0.0), 1.0)
    if rho >= 1.0:
        return 1.0
    if rho <= 0.0:
        return 0.0
    a = c * rho
    # Erlang B by its recurrence B(j) = a·B(j−1) / (j + a·B(j−1)), then C from B: stable at
    # any number of servers (the sum of a^j / j! overflows to NaN past ~750).
    blocked = 1.0
    for j in range(1, c + 1):
        blocked = a * blocked / (j + a * blocked)
    return blocked / (1.0 - rho * (1.0 - blocked))


def wait_ms(service_ms: float, servers: int, utilisation: float, tail: float = TAIL) -> float:
    """The wait a fraction ``tail`` of an M/M/c queue's calls exceed (``inf`` at or past
    saturation)."""
    c = max(servers, 1)
    rho = max(utilisation, 0.0)
    if rho >= 1.0:
        return math.inf
    p = erlang_c(c, rho)
    if p <= tail:
        return 0.0
    return math.log(p / tail) * service_ms / (c * (1.0 - rho))
