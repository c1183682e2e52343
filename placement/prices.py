"""The price catalog: USD per GPU-hour by accelerator, cloud, region and price class.

Entries come from a file of public list prices (each with its source and date) and can be
replaced at run time; a region-specific entry wins over the cloud's ``"*"`` entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PriceEntry:
    accelerator: str
    cloud: str
    region: str  # "*" = every region of the cloud
    price_class: str
    usd_per_gpu_hour: float
    source: str = ""
    as_of: str = ""
    instance: str = ""


class PriceCatalog:
    """Looks up a price; unknown combinations are an explicit ``None``, never a guess."""

    def __init__(self, entries: Iterable[PriceEntry] = ()) -> None:
        self._by_key: dict[tuple[str, str, str, str], PriceEntry] = {}
        self.upsert(entries)

    def upsert(self, entries: Iterable[PriceEntry]) -> None:
        for e in entries:
            self._by_key[(e.accelerator, e.cloud, e.region, e.price_class)] = e

    def replace(self, entries: Iterable[PriceEntry]) -> None:
        self._by_key.clear()
        self.upsert(entries)

    def entries(self) -> list[PriceEntry]:
        return list(self._by_key.values())

    def lookup(self, accelerator: str, cloud: str, region: str,
               price_class: str) -> PriceEntry | None:
        return (self._by_key.get((accelerator, cloud, region, price_class))
                or self._by_key.get((accelerator, cloud, "*", price_class)))

    def usd_per_second(self, accelerator: str, cloud: str, region: str,
                       price_class: str) -> float | None:
        e = self.lookup(accelerator, cloud, region, price_class)
        return None if e is None else e.usd_per_gpu_hour / 3600.0

    def __len__(self) -> int:
        return len(self._by_key)
