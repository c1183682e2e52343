"""Parsing the documents discovery reads: price lists and tenant policies (TOML or JSON).

A price document is the prices file's format (the file itself is read by
:mod:`services.prices_file`), ``[[prices]]`` tables with ``accelerator``, ``cloud``,
``region`` (``"*"`` = every region of the cloud, the default), ``price_class``,
``usd_per_gpu_hour``, ``source``, ``as_of`` and an informational ``instance`` (not on the
wire). The same format is accepted from Consul KV, as TOML or as JSON (``{"prices": [...]}``,
a bare list, or one price object). Errors name the document and the entry.
"""

from __future__ import annotations

import json
import pathlib
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from placement.errors import ConfigError
from services.api.switchyard.v1 import fleet_pb2
from services.convert import price_to_pb
from services.prices_file import load_prices

PRICE_CLASSES = ("on-demand", "spot", "reserved")
_REQUIRED = ("accelerator", "cloud", "price_class", "usd_per_gpu_hour")
_KNOWN = {*_REQUIRED, "region", "source", "as_of", "instance"}

PriceKey = tuple[str, str, str, str]


def parse_document(text: str, where: str) -> Any:
    """Decode ``text`` as JSON, else as TOML (a TOML ``[[prices]]`` also starts with ``[``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_exc:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as toml_exc:
            raise ConfigError(f"{where}: neither valid JSON ({json_exc}) nor valid TOML "
                              f"({toml_exc})") from toml_exc


def price_from_mapping(raw: Mapping[str, Any], where: str) -> fleet_pb2.Price:
    """Validate one price entry and build the wire message."""
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known are {sorted(_KNOWN)}")
    if raw["price_class"] not in PRICE_CLASSES:
        raise ConfigError(f"{where}.price_class {raw['price_class']!r} is not one of "
                          f"{list(PRICE_CLASSES)}")
    usd = raw["usd_per_gpu_hour"]
    if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
        raise ConfigError(f"{where}.usd_per_gpu_hour {usd!r} must be a number >= 0")
    return fleet_pb2.Price(
        accelerator=str(raw["accelerator"]), cloud=str(raw["cloud"]),
        region=str(raw.get("region", "*")),
        price_class=str(raw["price_class"]), usd_per_gpu_hour=float(usd),
        source=str(raw.get("source", "")), as_of=str(raw.get("as_of", "")),
    )


def prices_from_document(doc: Any, where: str) -> list[fleet_pb2.Price]:
    """Prices from a decoded document: ``{"prices": [...]}``, a list, or one price object."""
    if isinstance(doc, Mapping) and "prices" in doc:
        entries = doc["prices"]
    elif isinstance(doc, Mapping) and not doc:
        entries = []
    elif isinstance(doc, Mapping):
        entries = [doc]
    else:
        entries = doc
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'prices' must be a list of tables, got "
                          f"{type(entries).__name__}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: prices[{i}] must be a table")
        out.append(price_from_mapping(entry, f"{where}: prices[{i}]"))
    return out


def load_prices_file(path: pathlib.Path) -> list[fleet_pb2.Price]:
    """The prices file the mesh config names, read by the one shared reader."""
    return [price_to_pb(p) for p in load_prices(path)]


def price_key(p: fleet_pb2.Price) -> PriceKey:
    return (p.accelerator, p.cloud, p.region, p.price_class)


def merge_prices(*layers: Iterable[fleet_pb2.Price]) -> tuple[fleet_pb2.Price, ...]:
    """Overlay price lists: a later layer replaces an earlier entry with the same
    (accelerator, cloud, region, price_class); the result is sorted by that key."""
    merged: dict[PriceKey, fleet_pb2.Price] = {}
    for layer in layers:
        for p in layer:
            merged[price_key(p)] = p
    return tuple(merged[k] for k in sorted(merged))


def policy_from_document(doc: Any, where: str) -> dict[str, Any]:
    """A tenant policy is a table; its content is validated by the policy's consumer."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: a tenant policy must be a table, got {type(doc).__name__}")
    return dict(doc)
