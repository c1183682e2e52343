"""What placement accepts in a registration: every field checked, every refusal names it.

``check_backend`` raises ``InvalidRequest`` (INVALID_ARGUMENT) with the field, the value
and what would be accepted:

- ``id``: 1..128 characters of ``[A-Za-z0-9._-]`` (it ends up in route tables, metric
  labels, log lines and file names);
- ``endpoint``: ``host:port`` (``[v6addr]:port`` for IPv6), port 1..65535;
- ``region`` in the catalog and ``cloud`` that region's cloud;
- ``accelerator`` and ``price_class`` among those the price list prices (an unpriced
  backend could never be costed);
- ``accelerator_count`` and ``max_concurrency`` at least 1;
- each variant named (1..128 characters), for a logical model, with a quality within
  [0, 1].

``check_observations`` does the same for an edge's ``ReportObservations``, before any of it
is learned: ``edge_id`` 1..128 characters, ``edge_region`` a catalog region, and each observation's
``p50_ms``, ``p95_ms``, ``rtt_ms`` and ``calls_per_s`` finite and non-negative (a NaN p95
would stay in every table built from it, a negative one would make a deployment the
fastest, an infinite RTT never decays out of its running average). What one report carries
is bounded by what an edge sends (``services/edge/stats.py``, ``token_stats.py``), so no
report can outweigh the others:

- ``samples`` at most ``MAX_SAMPLES`` (an edge's latency window, ``stats.WINDOW``, 256): it
  weighs a region's p95 in the other regions' estimate (``RouteBuilder``);
- ``streams.weight`` at most ``MAX_STREAM_WEIGHT`` (1 / (1 - ``token_stats.DECAY``), 10, the
  most an edge's decayed TPOT fit can hold): it weighs that edge's token speeds in the fleet's;
- each deployment once, and at most ``max_observations`` entries (twice the deployments
  registered, at least ``MIN_OBSERVATIONS_CAP``): an edge sends one entry per deployment it
  called (``EdgeStats.by_deployment``);
- an observation's own ``edge_region``, when set, the report's (an edge sets both alike).
"""

from __future__ import annotations

import math
import re

from placement.catalog import Catalog
from placement.errors import InvalidRequest
from placement.fleet import FleetState
from placement.prices import PriceCatalog
from services.api.switchyard.v1 import fleet_pb2, telemetry_pb2
from services.edge.stats import WINDOW
from services.edge.token_stats import DECAY

ID_MAX = 128
_ID = re.compile(r"[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
MAX_SAMPLES = WINDOW  # latencies an edge keeps per deployment: the most it can report
MAX_STREAM_WEIGHT = 1.0 / (1.0 - DECAY)  # the limit of an edge's decayed TPOT-fit weight
MIN_OBSERVATIONS_CAP = 4096


def check_id(value: str, field: str = "backend.id") -> None:
    if not value or len(value) > ID_MAX or not _ID.fullmatch(value):
        raise InvalidRequest(f"{field} {value[:ID_MAX + 8]!r} is not a valid id: 1..{ID_MAX} "
                             "characters of A-Z a-z 0-9 . _ -")


def check_endpoint(value: str, field: str = "backend.endpoint") -> None:
    host, sep, port = value.rpartition(":")
    ok = bool(sep) and _HOST.fullmatch(host) is not None and _PORT.fullmatch(port) is not None
    if not ok or not 1 <= int(port) <= 65535:
        raise InvalidRequest(f"{field} {value!r} is not host:port with a port in 1..65535 "
                             "(e.g. 10.0.0.7:8001 or [::1]:8001)")


def check_backend(b: fleet_pb2.Backend, catalog: Catalog, prices: PriceCatalog) -> None:
    """Refuse a registration with anything placement could not route or cost correctly."""
    check_id(b.id)
    check_endpoint(b.endpoint)
    if b.region not in catalog.regions:
        raise InvalidRequest(f"backend.region {b.region!r} is not in the catalog's regions "
                             f"{sorted(catalog.regions)}")
    cloud = catalog.regions[b.region]
    if b.cloud != cloud:
        raise InvalidRequest(f"backend.cloud {b.cloud!r} is not region {b.region!r}'s cloud "
                             f"{cloud!r}")
    entries = prices.entries()
    accelerators = sorted({e.accelerator for e in entries})
    if b.accelerator not in accelerators:
        raise InvalidRequest(f"backend.accelerator {b.accelerator!r} is not in the price list "
                             f"(known: {accelerators})")
    classes = sorted({e.price_class for e in entries})
    if b.price_class and b.price_class not in classes:
        raise InvalidRequest(f"backend.price_class {b.price_class!r} is not in the price list "
                             f"(known: {classes})")
    if b.accelerator_count < 1:
        raise InvalidRequest(f"backend.accelerator_count {b.accelerator_count} must be >= 1")
    if b.max_concurrency < 1:
        raise InvalidRequest(f"backend.max_concurrency {b.max_concurrency} must be >= 1 "
                             "(requests the backend runs at once)")
    if not b.variants:
        raise InvalidRequest(f"backend.variants is empty for {b.id!r}: a backend serves at "
                             "least one variant")
    for i, v in enumerate(b.variants):
        if (not 0 < len(v.variant) <= ID_MAX or not 0 < len(v.logical_model) <= ID_MAX
                or not 0.0 <= v.quality <= 1.0):
            raise InvalidRequest(f"backend.variants[{i}] needs variant and logical_model "
                                 f"(1..{ID_MAX} characters) and a quality within [0, 1]; got "
                                 f"{v.variant[:ID_MAX + 8]!r}, {v.logical_model[:ID_MAX + 8]!r}, "
                                 f"{v.quality!r}")


def max_observations(fleet: FleetState) -> int:
    """The most entries one report may carry: twice the deployments registered (an edge
    still reports deployments deregistered since it called them), at least
    ``MIN_OBSERVATIONS_CAP``."""
    return max(MIN_OBSERVATIONS_CAP,
               2 * sum(len(s.backend.variants) for s in fleet.backends.values()))


def check_observations(report: telemetry_pb2.ObservationReport, catalog: Catalog,
                       fleet: FleetState | None = None) -> None:
    """Refuse an edge's report with a number placement must not learn, or more than an
    edge sends (see the module); ``fleet`` sets the entry cap (without: the floor)."""
    if not report.edge_id or len(report.edge_id) > ID_MAX:
        raise InvalidRequest(f"edge_id {report.edge_id[:ID_MAX + 8]!r} must be 1..{ID_MAX} "
                             "characters")
    if report.edge_region not in catalog.regions:
        raise InvalidRequest(f"edge_region {report.edge_region[:64]!r} is not a region of the "
                             f"catalog {sorted(catalog.regions)}")
    n = len(report.observations)
    if n > MIN_OBSERVATIONS_CAP and n > (cap := max_observations(fleet) if fleet is not None
                                         else MIN_OBSERVATIONS_CAP):
        raise InvalidRequest(f"observations has {n} entries; at most {cap} (twice the "
                             f"deployments registered, at least {MIN_OBSERVATIONS_CAP}): an "
                             "edge reports each deployment it called once")
    seen: set[str] = set()
    for i, o in enumerate(report.observations):
        for name in ("p50_ms", "p95_ms", "rtt_ms", "calls_per_s"):
            value = getattr(o, name)
            if not 0.0 <= value < math.inf:  # NaN fails too
                raise InvalidRequest(f"observations[{i}].{name} {value!r} "
                                     f"({o.deployment_id[:64]!r}) must be finite and >= 0")
        if o.samples > MAX_SAMPLES:
            raise InvalidRequest(f"observations[{i}].samples {o.samples} "
                                 f"({o.deployment_id[:64]!r}) is over {MAX_SAMPLES}, the "
                                 "latencies an edge keeps per deployment")
        if o.HasField("streams") and o.streams.weight > MAX_STREAM_WEIGHT:  # NaN: counted 0
            raise InvalidRequest(f"observations[{i}].streams.weight {o.streams.weight!r} "
                                 f"({o.deployment_id[:64]!r}) is over {MAX_STREAM_WEIGHT:g}, "
                                 "the most an edge's decayed TPOT fit holds")
        if o.edge_region and o.edge_region != report.edge_region:
            raise InvalidRequest(f"observations[{i}].edge_region {o.edge_region[:64]!r} is not "
                                 f"the report's edge_region {report.edge_region!r}")
        if o.deployment_id in seen:
            raise InvalidRequest(f"observations[{i}].deployment_id {o.deployment_id[:ID_MAX]!r}"
                                 " is in the report twice; an edge reports a deployment once")
        seen.add(o.deployment_id)
