"""The provisioned-cost day's fluid router: the switchyard rule per bucket (step 3 of
:mod:`benchmarks.costsim.provisioned`'s module doc, which says what it models and why).

The rule lives in :mod:`placement.plan_route` (the planner checks its own plans with it):
each class goes to the deployment cheapest per call among those loaded, up and within its
SLO at the pool's resulting utilisation (the brain's p95 inverted,
:func:`placement.plan_types.max_utilisation`); a pool runs no higher than the lowest cap of
the flows on it. Classes are placed loosest-first and tightest-first, each also *taking
back*, and the routing with the most calls within SLO counts. The day counts the GPUs that
exist (``count_reclaim=False``).
"""

from __future__ import annotations

from placement.plan_route import Routed, Router

__all__ = ["Routed", "Router"]
