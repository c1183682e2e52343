"""Routing hints from gRPC metadata: ``x-slo-ms``, ``x-min-quality``, ``x-max-cost-usd``,
``x-tenant``, ``x-allowed-regions``, ``x-request-id``, ``x-fail-fast``, ``x-routing-profile``.

No ``x-slo-ms``: the call's deadline minus a margin is the SLO; neither: the model's default.
A malformed value raises ``InvalidHint`` naming the header.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from placement.errors import InvalidHint
from placement.model import Hints

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}


@dataclass(frozen=True, slots=True)
class ParsedHints:
    slo_ms: float | None
    min_quality: float
    max_cost_usd: float
    tenant: str
    allowed_regions: frozenset[str]
    request_id: str
    fail_fast: bool | None
    profile: str


def _number(header: str, value: str, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except ValueError:
        raise InvalidHint(header, value, "not a number") from None
    if math.isnan(x) or not lo <= x <= hi:
        raise InvalidHint(header, value, f"must be between {lo:g} and {hi:g}")
    return x


def parse(metadata: Iterable[tuple[str, str | bytes]] | None, regions: frozenset[str],
          profiles: tuple[str, ...]) -> ParsedHints:
    slo = None
    min_q = max_cost = 0.0
    tenant = request_id = ""
    allowed: frozenset[str] = frozenset()
    fail_fast: bool | None = None
    profile = ""
    for key, value in metadata or ():
        if not key.startswith("x-"):
            continue
        if isinstance(value, bytes):
            continue  # -bin headers are not hints
        if key == "x-slo-ms":
            slo = _number(key, value, 1e-3, 3.6e6)
        elif key == "x-min-quality":
            min_q = _number(key, value, 0.0, 1.0)
        elif key == "x-max-cost-usd":
            max_cost = _number(key, value, 0.0, 1e6)
        elif key == "x-tenant":
            tenant = value
        elif key == "x-request-id":
            request_id = value[:128]
        elif key == "x-allowed-regions":
            allowed = frozenset(r.strip() for r in value.split(",") if r.strip())
            unknown = sorted(allowed - regions)
            if not allowed:
                raise InvalidHint(key, value, "names no region; give a comma-separated list "
                                              f"of: {sorted(regions)}")
            if unknown:
                raise InvalidHint(key, value, f"unknown region(s) {unknown}; known: "
                                              f"{sorted(regions)}")
        elif key == "x-fail-fast":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise InvalidHint(key, value, "must be true or false")
            fail_fast = low in _TRUE
        elif key == "x-routing-profile":
            if value not in profiles:
                raise InvalidHint(key, value, f"unknown profile; known: {list(profiles)}")
            profile = value
    return ParsedHints(slo, min_q, max_cost, tenant, allowed,
                       request_id or os.urandom(8).hex(), fail_fast, profile)


def resolve(p: ParsedHints, time_remaining_s: float | None, default_slo_ms: float,
            deadline_margin_ms: float, fail_fast_default: bool) -> Hints:
    """Hints for the pipeline: explicit SLO, else deadline − margin, else the model default."""
    if p.slo_ms is not None:
        slo = p.slo_ms
    elif time_remaining_s is not None:
        slo = max(time_remaining_s * 1000.0 - deadline_margin_ms, 1.0)
    else:
        slo = default_slo_ms
    return Hints(slo_ms=slo, min_quality=p.min_quality, max_cost_usd=p.max_cost_usd,
                 allowed_regions=p.allowed_regions,
                 fail_fast=fail_fast_default if p.fail_fast is None else p.fail_fast,
                 tenant=p.tenant)
