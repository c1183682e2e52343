"""The edge's route store: the tables placement last pushed, converted once, kept on disk.

Static stability: on start the edge loads the last snapshot it persisted, so it can route
while placement is down; every update from placement is persisted (atomically) as a
``RouteUpdate`` snapshot of every table the edge holds.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable

import structlog

from placement.model import Candidate
from placement.routes import rank
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb

log = structlog.get_logger("switchyard.edge.routes")


def _one_shard(region: str) -> str:
    return ""


class RouteStore:
    def __init__(self, region: str, path: pathlib.Path | None,
                 shard_of: Callable[[str], str] = _one_shard) -> None:
        """``shard_of``: backend region → the placement shard that owns it (its rows come
        from that shard alone; ``services/edge/shards.py``). Default: one shard owns all."""
        self.region = region
        self.path = path
        self.shard_of = shard_of
        self.tables: dict[str, placement_pb2.RouteTable] = {}
        self.candidates: dict[str, tuple[Candidate, ...]] = {}
        self._rows: dict[str, dict[str, tuple[placement_pb2.Candidate, Candidate]]] = {}
        self.default_slo_ms: dict[str, float] = {}
        self.version = 0
        self.source = "none"

    def apply(self, update: placement_pb2.RouteUpdate, source: str = "placement",
              shard: str | None = None) -> None:
        """Apply a snapshot (replaces every table) or row deltas (changed rows only).

        ``shard``: the placement shard the update came from; its snapshot replaces only the
        rows of that shard's regions (``None``: the update holds every row, e.g. from disk).
        """
        changed: set[str] = set()
        if update.snapshot and shard is None:
            self.tables.clear()
            self._rows.clear()
        elif update.snapshot:
            for m, rows in self._rows.items():
                for dep in [d for d, (_, c) in rows.items() if self.shard_of(c.region) == shard]:
                    del rows[dep]
                    changed.add(m)
        for t in update.tables:
            if t.edge_region != self.region:
                continue
            # Rows of other shards stay, as converted when they came (not converted again).
            kept = self._rows.get(t.model, {}) if t.model in self.tables else {}
            self.tables[t.model] = t
            self._rows[t.model] = {**kept, **{c.deployment_id: (c, candidate_from_pb(c))
                                              for c in t.candidates}}
            changed.add(t.model)
        for d in update.deltas:
            if d.edge_region != self.region:
                continue
            rows = self._rows.setdefault(d.model, {})
            for c in d.upserts:
                rows[c.deployment_id] = (c, candidate_from_pb(c))
            for dep in d.removed_deployments:
                rows.pop(dep, None)
            self.tables[d.model] = placement_pb2.RouteTable(
                model=d.model, edge_region=d.edge_region, version=d.version,
                default_slo_ms=d.default_slo_ms)
            changed.add(d.model)
        for m in update.removed_models:
            if shard is not None and any(self.shard_of(c.region) != shard
                                         for _, c in self._rows.get(m, {}).values()):
                self._rows[m] = {d: r for d, r in self._rows[m].items()
                                 if self.shard_of(r[1].region) != shard}
                changed.add(m)
                continue
            self.tables.pop(m, None)
            self._rows.pop(m, None)
            self.candidates.pop(m, None)
            changed.discard(m)
        for m in changed:
            # Ascending cost (stable): the cheapest profile stops at the spread band's edge.
            ordered = sorted(self._rows[m].values(), key=lambda r: rank(r[1]))
            self.candidates[m] = tuple(sorted((c for _, c in ordered),
                                              key=lambda c: c.cost_usd))
            table = self.tables[m]
            del table.candidates[:]
            table.candidates.extend(pb for pb, _ in ordered)
            self.default_slo_ms[m] = table.default_slo_ms
        if update.snapshot and shard is None:
            self.candidates = {m: self.candidates[m] for m in self.tables}
        self.version = max(self.version, update.version) if source != "disk" else update.version
        self.source = source

    def snapshot(self) -> placement_pb2.RouteUpdate:
        return placement_pb2.RouteUpdate(version=self.version, snapshot=True,
                                         tables=list(self.tables.values()))

    def persist(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(self.snapshot().SerializeToString())
        os.replace(tmp, self.path)

    def load(self) -> bool:
        """Load the persisted snapshot, if any; True when tables were loaded."""
        if self.path is None or not self.path.exists():
            return False
        try:
            update = placement_pb2.RouteUpdate.FromString(self.path.read_bytes())
        except Exception as exc:
            log.warning("route_file_unreadable", path=str(self.path), error=str(exc))
            return False
        self.apply(update, source="disk")
        log.info("routes_loaded_from_disk", path=str(self.path), version=self.version,
                 tables=len(self.tables))
        return bool(self.tables)

    def deployment_ids(self) -> set[str]:
        return {c.deployment_id for cs in self.candidates.values() for c in cs}

    def deployments_of(self, backend_id: str) -> set[str]:
        return {c.deployment_id for cs in self.candidates.values() for c in cs
                if c.backend_id == backend_id}

    def endpoints(self) -> dict[str, str]:
        """backend id → endpoint for every backend any table mentions."""
        return {c.backend_id: c.endpoint for cs in self.candidates.values() for c in cs}
