"""Reading the price catalog file (``[[prices]]`` tables; see examples/prices.toml)."""

from __future__ import annotations

import pathlib
import tomllib

from placement.errors import ConfigError
from placement.prices import PriceEntry

REQUIRED = ("accelerator", "cloud", "price_class", "usd_per_gpu_hour")


def load_prices(path: pathlib.Path) -> list[PriceEntry]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"price file {path} does not exist; set prices_file in the "
                          "mesh config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    out = []
    for i, p in enumerate(raw.get("prices", [])):
        missing = [k for k in REQUIRED if k not in p]
        if missing:
            raise ConfigError(f"{path}: prices[{i}] lacks {', '.join(missing)}")
        price = float(p["usd_per_gpu_hour"])
        if price < 0:
            raise ConfigError(f"{path}: prices[{i}].usd_per_gpu_hour {price} is negative")
        out.append(PriceEntry(p["accelerator"], p["cloud"], p.get("region", "*"),
                              p["price_class"], price, p.get("source", ""),
                              str(p.get("as_of", "")), p.get("instance", "")))
    return out
