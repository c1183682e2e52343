"""Routing hints from gRPC metadata: ``x-slo-ms``, ``x-min-quality``, ``x-max-cost-usd``,
``x-tenant``, ``x-allowed-regions``, ``x-request-id``, ``x-fail-fast``, ``x-routing-profile``.

No ``x-slo-ms``: the call's deadline minus a margin is the SLO; neither: the model's default.
No ``x-max-cost-usd``: no cap (``math.inf``); ``0`` is a real cap.
A malformed value raises ``InvalidHint`` naming the header; a number is a plain decimal
(``12``, ``0.5``, ``1e3``: no ``nan``, ``inf``, ``_`` or spaces). A header sent more than
once (but ``x-request-id``, whose repeats are joined with ',' as Envoy joins them) must
repeat the same value: disagreeing repeats raise ``InvalidHint`` naming both values (taking
either would let an appended header weaken a limit the caller set). A hint sent as a binary
header (``x-min-quality-bin``) is refused the same way: ignored, it dropped the caller's limit
without a word.

Streams (``parse_stream``) also read ``x-ttft-ms`` and ``x-tpot-ms`` (time to first token and
per output token objectives), ``x-max-tokens`` (the output length the choice plans for),
``x-session-id`` (prefix-cache affinity) and ``x-allow-variant-change`` (a resumed stream may
continue on a compatible variant), under the same rules.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from placement.errors import InvalidHint
from placement.model import Hints

# Every hint this module reads (``parse`` and ``parse_stream``).
HINTS = frozenset({"x-slo-ms", "x-min-quality", "x-max-cost-usd", "x-tenant", "x-request-id",
                   "x-allowed-regions", "x-fail-fast", "x-routing-profile", "x-ttft-ms",
                   "x-tpot-ms", "x-max-tokens", "x-session-id", "x-allow-variant-change"})
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# The most of a caller's x-request-id an edge keeps and echoes (the Envoy listener, module and
# Lua, and the fast path's trailer cut it alike): a 12 KB one echoed whole made the refusal of
# its over-limit metadata itself over a gRPC client's trailer limit ("Stream removed").
REQUEST_ID_CHARS = 128
SLO_RANGE = (1e-3, 3.6e6)  # ms: x-slo-ms, x-ttft-ms, x-tpot-ms (the Envoy listener's Lua too)
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}
T = TypeVar("T")


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
    if not _DECIMAL.fullmatch(value):
        raise InvalidHint(header, value, "not a number")
    x = float(value) + 0.0  # -0 is 0
    if math.isnan(x) or not lo <= x <= hi:
        raise InvalidHint(header, value, f"must be between {lo:g} and {hi:g}")
    return x


def _binary(key: str, value: bytes) -> None:
    """A hint sent as a ``-bin`` header is refused, not skipped (see the module doc)."""
    hint = key.removesuffix("-bin")
    if hint != key and hint in HINTS:
        raise InvalidHint(key, value[:64].decode("utf-8", "replace"),
                          f"{hint} is a text header; a binary one is not read as the hint")


def _once(seen: dict[str, tuple[str, object]], key: str, value: str, parsed: T) -> T:
    """``parsed``, unless an earlier ``key`` said something else (then ``InvalidHint``)."""
    first = seen.setdefault(key, (value, parsed))
    if first[1] != parsed:
        raise InvalidHint(key, value, f"contradicts an earlier {key}={first[0]!r}; send the "
                                      "hint once (or repeat the same value)")
    return parsed


def _regions(key: str, value: str, regions: frozenset[str]) -> frozenset[str]:
    allowed = frozenset(r.strip() for r in value.split(",") if r.strip())
    if not allowed:
        raise InvalidHint(key, value, "names no region; give a comma-separated list "
                                      f"of: {sorted(regions)}")
    unknown = sorted(allowed - regions)
    if unknown:
        raise InvalidHint(key, value, f"unknown region(s) {unknown}; known: {sorted(regions)}")
    return allowed


def parse(metadata: Iterable[tuple[str, str | bytes]] | None, regions: frozenset[str],
          profiles: tuple[str, ...]) -> ParsedHints:
    slo = None
    min_q = 0.0
    max_cost = math.inf  # no cap
    tenant = request_id = ""
    allowed: frozenset[str] = frozenset()
    fail_fast: bool | None = None
    profile = ""
    seen: dict[str, tuple[str, object]] = {}  # header -> (first raw value, parsed value)
    for key, value in metadata or ():
        if not key.startswith("x-"):
            continue
        if isinstance(value, bytes):
            _binary(key, value)  # -bin headers are not hints
            continue
        if key == "x-slo-ms":
            slo = _once(seen, key, value, _number(key, value, *SLO_RANGE))
        elif key == "x-min-quality":
            min_q = _once(seen, key, value, _number(key, value, 0.0, 1.0))
        elif key == "x-max-cost-usd":
            max_cost = _once(seen, key, value, _number(key, value, 0.0, 1e6))
        elif key == "x-tenant":
            tenant = _once(seen, key, value, value)
        elif key == "x-request-id":
            request_id = _join(request_id, value)
        elif key == "x-allowed-regions":
            allowed = _once(seen, key, value, _regions(key, value, regions))
        elif key == "x-fail-fast":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise InvalidHint(key, value, "must be true or false")
            fail_fast = _once(seen, key, value, low in _TRUE)
        elif key == "x-routing-profile":
            if value not in profiles:
                raise InvalidHint(key, value, f"unknown profile; known: {list(profiles)}")
            profile = _once(seen, key, value, value)
    return ParsedHints(slo, min_q, max_cost, tenant, allowed,
                       request_id[:REQUEST_ID_CHARS] or os.urandom(8).hex(), fail_fast, profile)


@dataclass(frozen=True, slots=True)
class StreamHints:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    max_tokens: int | None = None
    session_id: str = ""
    allow_variant_change: bool = False


def parse_stream(metadata: Iterable[tuple[str, str | bytes]] | None) -> StreamHints:
    """The stream-only hints (``parse`` reads the rest)."""
    ttft = tpot = None
    max_tokens: int | None = None
    session = ""
    allow = False
    seen: dict[str, tuple[str, object]] = {}
    for key, value in metadata or ():
        if not key.startswith("x-") or isinstance(value, bytes):
            continue
        if key == "x-ttft-ms":
            ttft = _once(seen, key, value, _number(key, value, *SLO_RANGE))
        elif key == "x-tpot-ms":
            tpot = _once(seen, key, value, _number(key, value, *SLO_RANGE))
        elif key == "x-max-tokens":
            n = _number(key, value, 1, 1e6)
            if n != int(n):
                raise InvalidHint(key, value, "must be a whole number of tokens")
            max_tokens = _once(seen, key, value, int(n))
        elif key == "x-session-id":
            session = _once(seen, key, value, value[:128])
        elif key == "x-allow-variant-change":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise InvalidHint(key, value, "must be true or false")
            allow = _once(seen, key, value, low in _TRUE)
    return StreamHints(ttft, tpot, max_tokens, session, allow)


def _join(ids: str, value: str) -> str:
    """``x-request-id`` sent more than once: its values joined with ',', as Envoy joins a
    repeated one before any filter (an id, not a limit: refused, the two engines answered one
    call two ways)."""
    return f"{ids},{value}" if ids else value


def request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's ``x-request-id`` (repeats joined, cut to ``REQUEST_ID_CHARS``), else a new one;
    for answers that end before the hints are parsed (admission, limits)."""
    ids = ""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str):
            ids = _join(ids, value)
    return ids[:REQUEST_ID_CHARS] or os.urandom(8).hex()


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
