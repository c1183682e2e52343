"""Policies registered by name and profiles built from names.

A duplicate registration raises; an unknown name fails at load with the path that named it.
The built-in profiles:

- ``cheapest`` (default): every filter, cost scorer, capacity-weighted spread among the
  candidates within ``band`` of the cheapest.
- ``fastest``: the same filters, latency scorer, best pick; the "always the fastest
  deployment" baseline the demo compares against.
"""

from __future__ import annotations

from collections.abc import Callable

from placement.errors import ConfigError
from placement.filters.availability import CordonFilter
from placement.filters.capacity import CapacityFilter
from placement.filters.cost_cap import CostCapFilter
from placement.filters.ejected import EjectedFilter
from placement.filters.quality import QualityFilter
from placement.filters.region import AvoidRegionFilter, ResidencyFilter
from placement.filters.routable import RoutableFilter
from placement.filters.slo import SloFilter
from placement.filters.slow_start import SlowStartFilter
from placement.framework import Filter, Scorer
from placement.pickers.best import BestPicker
from placement.pickers.spread import SpreadPicker
from placement.pipeline import Profile, StageObserver
from placement.scorers.cost import CostScorer
from placement.scorers.latency import LatencyScorer

FILTERS: dict[str, Callable[[], Filter]] = {}
SCORERS: dict[str, Callable[[], Scorer]] = {}


def register_filter(name: str, factory: Callable[[], Filter]) -> None:
    if name in FILTERS:
        raise ConfigError(f"filter {name!r} is registered twice")
    FILTERS[name] = factory


def register_scorer(name: str, factory: Callable[[], Scorer]) -> None:
    if name in SCORERS:
        raise ConfigError(f"scorer {name!r} is registered twice")
    SCORERS[name] = factory


for _cls in (RoutableFilter, EjectedFilter, ResidencyFilter, QualityFilter, CostCapFilter,
             SloFilter, CapacityFilter, CordonFilter, AvoidRegionFilter, SlowStartFilter):
    register_filter(_cls.name, _cls)
register_scorer(CostScorer.name, CostScorer)
register_scorer(LatencyScorer.name, LatencyScorer)

# Hard filters first: they are cheap and decide residency before anything else.
DEFAULT_FILTERS = ("routable", "ejected", "residency", "quality", "cost-cap",
                   "slo", "capacity", "cordon", "avoid-region", "slow-start")


def build_filters(names: tuple[str, ...], where: str) -> list[Filter]:
    out = []
    for i, n in enumerate(names):
        if n not in FILTERS:
            raise ConfigError(f"{where}[{i}] filter {n!r} is not registered "
                              f"(known: {sorted(FILTERS)})")
        out.append(FILTERS[n]())
    return out


def build_profile(name: str, band: float = 0.05,
                  observer: StageObserver | None = None) -> Profile:
    """A built-in profile by name; ``band`` is the spread band of ``cheapest``."""
    filters = build_filters(DEFAULT_FILTERS, f"profiles.{name}.filters")
    if name == "cheapest":
        return Profile(name, filters, [(SCORERS["cost"](), 1.0)], SpreadPicker(band), observer,
                       cost_band=band)
    if name == "fastest":
        return Profile(name, filters, [(SCORERS["latency"](), 1.0)], BestPicker(), observer)
    raise ConfigError(f"routing.profile {name!r} is not a profile (known: cheapest, fastest)")


PROFILES = ("cheapest", "fastest")
