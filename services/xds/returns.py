"""Slow start for Envoy edges: when a deployment came back, in placement's view, per region.

Envoy's own ``slow_start_config`` ramps only hosts added within a cluster, and each
deployment cluster holds one host (``clusters.py``), so the ramp is placement's: a
deployment that becomes usable again takes a rising share of its classes' compiled split
(``placement.splits``, ``Learned.warming``), the share the Python edge gives a deployment
back from ejection (``placement.filters.slow_start.ramp_share``, the one linear rule; the
ramp is the edge's ``[edge] slow_start_s``, ``EnvoySettings.slow_start_s``).

A deployment returns, for a region's compile, when a row of the region's tables that the
last observed compile had with a ``dropped_reason`` (drained, Triton or the variant not
ready, no price, a hardware verdict) has none now, or when a usable row appears for a model
the region already had a usable row of (a new registration joining a model, a backend back
after its rows were gone). The region's first compile (a new placement, a new region) starts
nothing: nothing came back, it was there.

Compiles are stepped, not per tick: a ramping deployment's share is the linear rule read at
the start of the step the compile falls in, steps ``ramp_s / RAMP_STEPS`` long on one grid
for every deployment of the region (never above the rule; every deployment's share moves at
the same instants, so a region ramping many deployments is still recompiled at most once a
step, ``RAMP_STEPS`` + 1 times per ramp). ``due``/``wait_s`` tell the xDS server when the
next step is (``server.AdsServer.relearn_due``); the cost simulator's Envoy row runs the same
object.

Pure apart from its own state: the caller passes the time (``now``) and the rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from placement.filters.slow_start import ramp_share

RAMP_STEPS = 4  # compiles per ramp (plus one at its end)


class Row(Protocol):
    """What is read of a row: a ``placement_pb2.Candidate`` or a ``placement.model.Candidate``."""

    @property
    def deployment_id(self) -> str: ...

    @property
    def dropped_reason(self) -> str: ...


@dataclass
class _Region:
    usable: dict[str, bool] = field(default_factory=dict)  # deployment -> at the last look
    models: set[str] = field(default_factory=set)  # with a usable row at the last look
    since: dict[str, float] = field(default_factory=dict)  # ramping deployment -> returned
    step: float = -math.inf  # the grid step of the last ``shares``


class Returns:
    """Per region: which deployments came back and when; their shares at a compile."""

    def __init__(self, ramp_s: float, steps: int = RAMP_STEPS) -> None:
        self.ramp_s = ramp_s
        self.steps = max(1, steps)
        self._regions: dict[str, _Region] = {}
        self.returned = 0  # returns seen, all regions (tests, benchmarks)

    @property
    def step_s(self) -> float:
        return self.ramp_s / self.steps

    def observe(self, region: str, tables: Iterable[tuple[str, Sequence[Row]]],
                now: float) -> None:
        """The region's rows now, per model: ``(model, rows)``."""
        if self.ramp_s <= 0:
            return
        r = self._regions.get(region)
        first = r is None
        if r is None:
            r = self._regions[region] = _Region()
        usable: dict[str, bool] = {}
        models: set[str] = set()
        for model, rows in tables:
            for c in rows:
                ok = not c.dropped_reason
                dep = c.deployment_id
                usable[dep] = usable.get(dep, False) or ok
                if ok:
                    models.add(model)
                    was = r.usable.get(dep)
                    if not first and (was is False or (was is None and model in r.models)):
                        if dep not in r.since:
                            self.returned += 1
                        r.since[dep] = now
        for dep in [d for d in r.since if not usable.get(d)]:
            del r.since[dep]  # unusable again (or gone): its ramp starts over at its return
        r.usable, r.models = usable, models

    def shares(self, region: str, now: float) -> dict[str, float]:
        """Each ramping deployment's share for a compile at ``now``: the linear rule at the
        start of ``now``'s step; a ramp over is forgotten."""
        r = self._regions.get(region)
        if r is None or not r.since:
            return {}
        step = math.floor(now / self.step_s) * self.step_s
        r.step = step
        out: dict[str, float] = {}
        for dep, since in list(r.since.items()):
            share = ramp_share(step - since, self.ramp_s)
            if share is None:
                del r.since[dep]
            else:
                out[dep] = share
        return out

    def due(self, region: str, now: float) -> bool:
        """A ramping deployment's share moved since the region's last compile (a step
        boundary passed): recompile. Safe from the loop while a compile runs on the worker
        thread (it reads a float and a dict's size)."""
        r = self._regions.get(region)
        return (r is not None and bool(r.since)
                and math.floor(now / self.step_s) * self.step_s > r.step)

    def wait_s(self, region: str, now: float) -> float | None:
        """Seconds to the region's next step while something ramps (None: nothing does)."""
        r = self._regions.get(region)
        if r is None or not r.since:
            return None
        return (math.floor(now / self.step_s) + 1) * self.step_s - now
