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
fastest, an infinite RTT never decays out of its running average).
"""

from __future__ import annotations

import math
import re

from placement.catalog import Catalog
from placement.errors import InvalidRequest
from placement.prices import PriceCatalog
from services.api.switchyard.v1 import fleet_pb2, telemetry_pb2

ID_MAX = 128
_ID = re.compile(r"[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


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


def check_observations(report: telemetry_pb2.ObservationReport, catalog: Catalog) -> None:
    """Refuse an edge's report with a number placement must not learn (see the module)."""
    if not report.edge_id or len(report.edge_id) > ID_MAX:
        raise InvalidRequest(f"edge_id {report.edge_id[:ID_MAX + 8]!r} must be 1..{ID_MAX} "
                             "characters")
    if report.edge_region not in catalog.regions:
        raise InvalidRequest(f"edge_region {report.edge_region[:64]!r} is not a region of the "
                             f"catalog {sorted(catalog.regions)}")
    for i, o in enumerate(report.observations):
        for name in ("p50_ms", "p95_ms", "rtt_ms", "calls_per_s"):
            value = getattr(o, name)
            if not 0.0 <= value < math.inf:  # NaN fails too
                raise InvalidRequest(f"observations[{i}].{name} {value!r} "
                                     f"({o.deployment_id[:64]!r}) must be finite and >= 0")
