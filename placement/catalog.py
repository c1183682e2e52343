"""The catalog: regions and their clouds, the RTT matrix, logical models and their variants."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from placement.errors import UnknownModel
from placement.model import LogicalModel, Variant

SAME_REGION_RTT_MS = 1.0
UNKNOWN_RTT_MS = 150.0  # planned when two regions have no entry: pessimistic, never free


@dataclass(slots=True)
class Catalog:
    regions: dict[str, str]  # region -> cloud
    models: dict[str, LogicalModel]
    rtt_ms: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def build(cls, regions: dict[str, str], models: Iterable[LogicalModel],
              rtt: Iterable[tuple[str, str, float]]) -> Catalog:
        """RTT entries are symmetric unless both directions are given."""
        matrix: dict[tuple[str, str], float] = {}
        for a, b, ms in rtt:
            matrix[(a, b)] = ms
            matrix.setdefault((b, a), ms)
        return cls(dict(regions), {m.name: m for m in models}, matrix)

    def rtt(self, a: str, b: str) -> float:
        if a == b:
            return self.rtt_ms.get((a, b), SAME_REGION_RTT_MS)
        return self.rtt_ms.get((a, b), UNKNOWN_RTT_MS)

    def model(self, name: str) -> LogicalModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(f"model {name!r} is not in the catalog "
                               f"(known: {', '.join(sorted(self.models))})") from None

    def variant(self, name: str) -> Variant | None:
        for m in self.models.values():
            for v in m.variants:
                if v.name == name:
                    return v
        return None
