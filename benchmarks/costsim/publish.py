"""What the simulated edges see of placement's tables when placement publishes as its hub does
(``services.placement.hub``), not every fresh build.

The simulator's control plane rebuilds every table every ``table_interval_s`` and, by default,
hands the edges the fresh rows. The live hub pushes a row again only when an edge would route
differently on it (``services.placement.bands.material``: a field read exactly, spare capacity
crossing zero, an estimate out of the wider of its fixed band and the row's own jitter), and
what it learned from telemetry (estimates, slot shares: ``bands.DEFERRABLE``) at most once
every ``bands.ESTIMATE_EVERY_S`` (5 s) unless an estimate doubled or halved (``bands.large``);
in between an edge routes on the rows it holds. ``Publisher`` applies those rules
(``bands.judge``, the hub's own) to each
fresh build (``ControlPlane(published=True)``, the ``*-published`` policies), so the simulator
can measure what the bands and the cadence cost routing.

Two differences from the hub, both small against the cadence: the hub publishes deferred rows
by a timer when the cadence allows, here at the first rebuild after it (at most
``table_interval_s`` later); and the hub's first build of a table (a full rebuild) compares on
the fixed bands only, as every build of a new row does here.
"""

from __future__ import annotations

from placement.model import Candidate
from placement.routes import rank
from services.placement.bands import DEFERRABLE, ESTIMATE_EVERY_S, HELD, Jitter, judge

Key = tuple[str, str]  # (model, edge region)


class Publisher:
    """The rows last published per table, each row's jitter, and the estimate cadence."""

    def __init__(self, every_s: float = ESTIMATE_EVERY_S) -> None:
        self.every_s = every_s
        self.rows: dict[Key, dict[str, Candidate]] = {}
        self.jitter: dict[Key, dict[str, Jitter]] = {}
        self.due = 0.0  # learned changes wait until then
        self.published = 0  # rows published (the fresh rows handed on)
        self.deferred = 0  # row builds whose learned change waited for the cadence
        self._learned = False  # a learned change was published in this rebuild

    def table(self, key: Key, fresh: list[Candidate], now: float) -> list[Candidate]:
        """The table an edge holds after this build: per row the fresh one if it changed
        materially (and, if only by what was learned, the cadence allows), else the row last
        published; rows gone are gone, in rank order as the hub's snapshot sorts them."""
        defer = now < self.due
        pushed = self.rows.setdefault(key, {})
        jitters = self.jitter.setdefault(key, {})
        seen = set()
        for c in fresh:
            dep = c.deployment_id
            seen.add(dep)
            old = pushed.get(dep)
            why, jitters[dep] = judge(old, c, jitters.get(dep), defer=defer)
            if why == HELD:
                self.deferred += 1
                continue
            if why:
                pushed[dep] = c
                self.published += 1
                self._learned |= why in DEFERRABLE
        for dep in [d for d in pushed if d not in seen]:
            del pushed[dep]
            jitters.pop(dep, None)
        return sorted(pushed.values(), key=rank)

    def built(self, now: float) -> None:
        """One rebuild of every table done: a learned change published starts the wait."""
        if self._learned:
            self.due = now + self.every_s
        self._learned = False
