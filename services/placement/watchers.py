"""What a publish offers the watching edges: one ``RegionPush`` per edge region, shared by
its watchers, and a ``Watcher`` per ``WatchRoutes`` stream holding the pushes it has not
sent yet (merged row by row once it falls ``MAX_PENDING_PUSHES`` behind; ``Merges`` shares
a merge among the watchers behind by the same pushes). ``services.placement.hub`` builds
the rows and publishes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.api.switchyard.v1 import placement_pb2

Rows = dict[str, placement_pb2.Candidate | None]  # deployment id -> new row (None = removed)
MAX_PENDING_PUSHES = 8  # a watcher further behind has its pending pushes merged into one


@dataclass
class RegionPush:
    """One publish's changed rows for one edge region, shared by all its watchers."""

    version: int
    tables: dict[str, tuple[int, float, Rows]]  # model -> (table version, default SLO, rows)
    _deltas: list[placement_pb2.TableDelta] | None = None
    _payload: bytes | None = None

    def deltas(self, region: str) -> list[placement_pb2.TableDelta]:
        if self._deltas is None:
            self._deltas = [placement_pb2.TableDelta(
                model=model, edge_region=region, version=version, default_slo_ms=slo,
                upserts=[c for c in rows.values() if c is not None],
                removed_deployments=[d for d, c in rows.items() if c is None])
                for model, (version, slo, rows) in self.tables.items()]
        return self._deltas

    def payload(self, region: str, placement_id: str) -> bytes:
        """The serialised ``RouteUpdate``, built once however many edges watch the region."""
        if self._payload is None:
            self._payload = placement_pb2.RouteUpdate(
                version=self.version, deltas=self.deltas(region),
                placement_id=placement_id).SerializeToString()
        return self._payload


def _merge(pushes: list[RegionPush]) -> RegionPush:
    tables: dict[str, tuple[int, float, Rows]] = {}
    for p in pushes:
        for model, (version, slo, rows) in p.tables.items():
            merged = dict(tables[model][2]) if model in tables else {}
            merged.update(rows)
            tables[model] = (version, slo, merged)
    return RegionPush(pushes[-1].version, tables)


class Merges:
    """Merged pushes shared by the watchers of a region behind by the same pushes, so the
    merge is built and serialised once, not once per watcher; emptied at every publish."""

    def __init__(self) -> None:
        self._by_ids: dict[tuple[int, ...], tuple[list[RegionPush], RegionPush]] = {}

    def merge(self, pushes: list[RegionPush]) -> RegionPush:
        hit = self._by_ids.get(key := tuple(map(id, pushes)))
        if hit is not None and all(a is b for a, b in zip(hit[0], pushes, strict=True)):
            return hit[1]
        merged = _merge(pushes)
        self._by_ids[key] = (pushes, merged)  # the sources kept alive: their ids stay theirs
        return merged

    def clear(self) -> None:
        self._by_ids.clear()


class Watcher:
    """One WatchRoutes stream: the region pushes it has not sent yet, and an event to wake it."""

    def __init__(self, edge_id: str, region: str, merges: Merges | None = None) -> None:
        self.edge_id = edge_id
        self.region = region
        self.pushes: list[RegionPush] = []
        self.wake = asyncio.Event()
        self.merges = merges or Merges()

    def offer(self, push: RegionPush) -> None:
        self.pushes.append(push)
        if len(self.pushes) > MAX_PENDING_PUSHES:
            self.pushes = [self.merges.merge(self.pushes)]
        self.wake.set()

    def take_push(self) -> RegionPush | None:
        """Everything pending as one push: the shared one when only one is pending."""
        pushes, self.pushes = self.pushes, []
        self.wake.clear()
        if not pushes:
            return None
        return pushes[0] if len(pushes) == 1 else self.merges.merge(pushes)

    def take(self) -> list[placement_pb2.TableDelta]:
        push = self.take_push()
        return push.deltas(self.region) if push is not None else []
