"""Cost per request: ``C(d) = price_per_second(hw, cloud, region, class) × compute_s(d)``.

``compute_s`` is batch-amortised: Triton's ``compute_infer`` time divided by the number of
requests (not executions) it served, so batching makes each request cheaper.
"""

from __future__ import annotations


def cost_per_request(usd_per_second: float, compute_ms_per_request: float) -> float:
    return usd_per_second * compute_ms_per_request / 1000.0
