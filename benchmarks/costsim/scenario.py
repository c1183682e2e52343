"""The scenario file: clouds, regions, RTT, GPU pools, prices, models, load and outages.

The format is documented in ``benchmarks/scenarios/README.md``. Loading validates every
reference and names the path of a bad entry (``pools[3].region 'x' is not in regions``).
Prices come from the price file the scenario names (``examples/prices.toml`` by default),
read with the project's own loader; a pool may carry its own ``usd_per_gpu_hour`` only when
that file has no entry for it, and must then say where the number came from.

Time inside a scenario is *hours of one simulated day* (0–24), compressed onto
``duration_s`` simulated seconds; control loops (telemetry, tables, cooldowns) run in
simulated seconds and are not compressed.
"""

from __future__ import annotations

import math
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any

from placement.catalog import Catalog
from placement.errors import ConfigError
from placement.model import Backend, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from services.prices_file import load_prices

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    cloud: str
    lat: float
    lon: float
    utc_offset_h: float
    load_rps: float  # mean calls/s over the day, before diurnal shape and bursts


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    model: str
    quality: float
    compute_ms: float  # service time on an accelerator of speed 1.0


@dataclass(frozen=True, slots=True)
class CallClass:
    """A kind of call of one model: its share of the model's calls, SLO and quality floor."""

    model: str
    index: int
    share: float
    slo_ms: float
    min_quality: float


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    default_slo_ms: float
    share: float  # of every region's calls
    variants: tuple[VariantSpec, ...]
    classes: tuple[CallClass, ...]


@dataclass(frozen=True, slots=True)
class Pool:
    """GPUs of one kind in one region at one price class: one Triton backend."""

    id: str
    region: str
    cloud: str
    accelerator: str
    price_class: str
    gpus: int
    speed: float
    max_concurrency_per_gpu: int
    variants: tuple[str, ...]
    usd_per_gpu_hour: float
    price_source: str
    service_sigma: float | None = None  # this pool's service-time noise; None = [sim]'s

    def sigma(self, settings: SimSettings) -> float:
        return settings.service_sigma if self.service_sigma is None else self.service_sigma

    @property
    def servers(self) -> int:
        return self.gpus * self.max_concurrency_per_gpu


@dataclass(frozen=True, slots=True)
class Burst:
    region: str  # "*" = every region
    model: str  # "" = every model
    start_h: float
    duration_h: float
    multiplier: float


@dataclass(frozen=True, slots=True)
class Outage:
    """Pools matching (region, cloud, accelerator, price_class; "" = any) are down."""

    region: str
    cloud: str
    accelerator: str
    price_class: str
    start_h: float
    duration_h: float

    def matches(self, p: Pool) -> bool:
        return all(not want or want == have for want, have in (
            (self.region, p.region), (self.cloud, p.cloud),
            (self.accelerator, p.accelerator), (self.price_class, p.price_class)))


@dataclass(frozen=True, slots=True)
class SimSettings:
    telemetry_interval_s: float = 1.0
    table_interval_s: float = 1.0
    edge_refresh_s: float = 2.0
    slo_margin_ms: float = 2.0
    spread_band: float = 0.05
    max_attempts: int = 3
    max_queue_per_server: int = 8
    service_sigma: float = 0.25
    warmup_calls: int = 20
    lp_bucket_s: float = 20.0
    lp_utilisation_cap: float = 0.9


@dataclass(slots=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    quick_duration_s: float
    load_scale: float
    quick_load_scale: float
    clouds: tuple[str, ...]
    regions: dict[str, Region]
    rtt_ms: dict[tuple[str, str], float]
    models: dict[str, ModelSpec]
    pools: tuple[Pool, ...]
    diurnal_amplitude: float
    diurnal_peak_local_h: float
    bursts: tuple[Burst, ...]
    outages: tuple[Outage, ...]
    settings: SimSettings
    price_entries: list[PriceEntry] = field(default_factory=list)
    source: str = ""

    # -- views in placement's own types ---------------------------------------------------

    def variant(self, name: str) -> VariantSpec:
        return next(v for m in self.models.values() for v in m.variants if v.name == name)

    def catalog(self) -> Catalog:
        models = [LogicalModel(m.name, m.default_slo_ms,
                               tuple(Variant(v.name, m.name, v.quality) for v in m.variants))
                  for m in self.models.values()]
        return Catalog.build({r.name: r.cloud for r in self.regions.values()}, models,
                             [(a, b, ms) for (a, b), ms in self.rtt_ms.items()])

    def prices(self) -> PriceCatalog:
        return PriceCatalog(self.price_entries)

    def backends(self) -> list[Backend]:
        return [Backend(id=p.id, endpoint=f"sim://{p.id}", cloud=p.cloud, region=p.region,
                        accelerator=p.accelerator, accelerator_count=p.gpus,
                        price_class=p.price_class,
                        variants=tuple(Variant(v, self.variant(v).model,
                                               self.variant(v).quality) for v in p.variants),
                        max_concurrency=p.servers)
                for p in self.pools]

    def classes(self) -> list[CallClass]:
        return [c for m in self.models.values() for c in m.classes]

    def hours_to_s(self, hours: float, duration_s: float) -> float:
        return hours / 24.0 * duration_s


def rtt_from_coordinates(a: Region, b: Region, base_ms: float, km_per_ms: float) -> float:
    """Great-circle distance → planned RTT: ``base + distance / km_per_ms`` (round trip)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    return round(base_ms + km / km_per_ms, 1)


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where} lacks {key!r}")
    return d[key]


def load_scenario(path: str | pathlib.Path) -> Scenario:
    """Read and validate a scenario file (see benchmarks/scenarios/README.md)."""
    p = pathlib.Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"scenario file {p} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_scenario(raw, p.resolve().parent, str(p))


def parse_scenario(raw: dict[str, Any], base_dir: pathlib.Path, source: str) -> Scenario:
    head = raw.get("scenario", {})
    settings = SimSettings(**raw.get("sim", {}))
    clouds = tuple(c["name"] for c in raw.get("clouds", []))
    regions: dict[str, Region] = {}
    for i, r in enumerate(raw.get("regions", [])):
        where = f"regions[{i}]"
        cloud = _req(r, "cloud", where)
        if clouds and cloud not in clouds:
            raise ConfigError(f"{where}.cloud {cloud!r} is not in clouds {list(clouds)}")
        name = _req(r, "name", where)
        if name in regions:
            raise ConfigError(f"{where}.name {name!r} is defined twice")
        regions[name] = Region(name, cloud, float(r.get("lat", 0.0)), float(r.get("lon", 0.0)),
                               float(r.get("utc_offset_h", 0.0)), float(r.get("load_rps", 0.0)))
    if not regions:
        raise ConfigError(f"{source}: no regions")
    rtt_cfg = raw.get("rtt_model", {})
    base, km_per_ms = float(rtt_cfg.get("base_ms", 2.0)), float(rtt_cfg.get("km_per_ms", 66.7))
    rtt: dict[tuple[str, str], float] = {}
    names = sorted(regions)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rtt[(a, b)] = rtt_from_coordinates(regions[a], regions[b], base, km_per_ms)
    for i, e in enumerate(raw.get("rtt", [])):
        for end in ("a", "b"):
            if e.get(end) not in regions:
                raise ConfigError(f"rtt[{i}].{end} {e.get(end)!r} is not in regions")
        key = (e["a"], e["b"]) if (e["a"], e["b"]) in rtt else (e["b"], e["a"])
        rtt[key] = float(e["ms"])
    models = _models(raw.get("models", []))
    all_variants = {v.name for m in models.values() for v in m.variants}
    speeds = {k: float(v) for k, v in raw.get("accelerators", {}).items()}
    price_file = base_dir / head.get("prices_file", "../../examples/prices.toml")
    entries = load_prices(price_file)
    catalog = PriceCatalog(entries)
    pools = []
    for i, pc in enumerate(raw.get("pools", [])):
        pool, extra = _pool(pc, i, regions, speeds, all_variants, catalog)
        pools.append(pool)
        if extra is not None:
            entries.append(extra)
    if len({p.id for p in pools}) != len(pools):
        raise ConfigError("pools: two pools share (region, accelerator, price_class); "
                          "give one an explicit id")
    bursts = tuple(Burst(b.get("region", "*"), b.get("model", ""), float(b["start_h"]),
                         float(b["duration_h"]), float(b["multiplier"]))
                   for b in raw.get("bursts", []))
    outages = tuple(Outage(o.get("region", ""), o.get("cloud", ""), o.get("accelerator", ""),
                           o.get("price_class", ""), float(o["start_h"]),
                           float(o["duration_h"])) for o in raw.get("outages", []))
    for i, o in enumerate(outages):
        if not any(o.matches(p) for p in pools):
            raise ConfigError(f"outages[{i}] matches no pool")
    diurnal = raw.get("diurnal", {})
    return Scenario(
        name=head.get("name", pathlib.Path(source).stem), seed=int(head.get("seed", 1)),
        duration_s=float(head.get("duration_s", 600)),
        quick_duration_s=float(head.get("quick_duration_s", 120)),
        load_scale=float(head.get("load_scale", 1.0)),
        quick_load_scale=float(head.get("quick_load_scale", head.get("load_scale", 1.0))),
        clouds=clouds or tuple(sorted({r.cloud for r in regions.values()})),
        regions=regions, rtt_ms=rtt, models=models, pools=tuple(pools),
        diurnal_amplitude=float(diurnal.get("amplitude", 0.0)),
        diurnal_peak_local_h=float(diurnal.get("peak_local_h", 14.0)),
        bursts=bursts, outages=outages, settings=settings, price_entries=entries,
        source=source)


def _models(raw_models: list[dict[str, Any]]) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    for i, m in enumerate(raw_models):
        where = f"models[{i}]"
        name = _req(m, "name", where)
        slo = float(_req(m, "default_slo_ms", where))
        variants = tuple(VariantSpec(v["name"], name, float(v["quality"]), float(v["compute_ms"]))
                         for v in _req(m, "variants", where))
        raw_classes = m.get("classes") or [{"share": 1.0, "slo_ms": slo, "min_quality": 0.0}]
        total = sum(float(c["share"]) for c in raw_classes)
        classes = tuple(CallClass(name, j, float(c["share"]) / total,
                                  float(c.get("slo_ms", slo)), float(c.get("min_quality", 0.0)))
                        for j, c in enumerate(raw_classes))
        for c in classes:
            if not any(v.quality >= c.min_quality for v in variants):
                raise ConfigError(f"{where}.classes[{c.index}] min_quality {c.min_quality} "
                                  "is above every variant's quality")
        models[name] = ModelSpec(name, slo, float(m.get("share", 1.0)), variants, classes)
    if not models:
        raise ConfigError("no models")
    total = sum(m.share for m in models.values())
    return {k: ModelSpec(m.name, m.default_slo_ms, m.share / total, m.variants, m.classes)
            for k, m in models.items()}


def _pool(pc: dict[str, Any], i: int, regions: dict[str, Region], speeds: dict[str, float],
          all_variants: set[str], catalog: PriceCatalog) -> tuple[Pool, PriceEntry | None]:
    where = f"pools[{i}]"
    region = _req(pc, "region", where)
    if region not in regions:
        raise ConfigError(f"{where}.region {region!r} is not in regions")
    cloud = regions[region].cloud
    accel = _req(pc, "accelerator", where)
    speed = float(pc.get("speed", speeds.get(accel, 0.0)))
    if speed <= 0:
        raise ConfigError(f"{where}.accelerator {accel!r} has no speed in [accelerators] "
                          "and the pool gives none")
    price_class = pc.get("price_class", "on-demand")
    variants = tuple(pc.get("variants", sorted(all_variants)))
    for v in variants:
        if v not in all_variants:
            raise ConfigError(f"{where}.variants {v!r} is not a variant of any model")
    listed = catalog.lookup(accel, cloud, region, price_class)
    extra = None
    if listed is not None:
        usd, source = listed.usd_per_gpu_hour, listed.source
        if "usd_per_gpu_hour" in pc:
            raise ConfigError(f"{where}.usd_per_gpu_hour given, but the price file has "
                              f"{accel} {price_class} in {cloud}/{region}: remove one")
    elif "usd_per_gpu_hour" in pc:
        usd = float(pc["usd_per_gpu_hour"])
        source = _req(pc, "price_source", where)
        extra = PriceEntry(accel, cloud, region, price_class, usd, source)
    else:
        raise ConfigError(f"{where}: no price for {accel} {price_class} in {cloud}/{region} "
                          "in the price file; add usd_per_gpu_hour and price_source")
    short = accel.removeprefix("nvidia-")
    pid = pc.get("id", f"{region}.{short}.{price_class}")
    sigma = pc.get("service_sigma")
    if sigma is not None and not 0.0 <= float(sigma) <= 2.0:
        raise ConfigError(f"{where}.service_sigma {sigma} is outside [0, 2]")
    return Pool(pid, region, cloud, accel, price_class, int(pc.get("gpus", 1)), speed,
                int(pc.get("max_concurrency_per_gpu", 4)), variants, usd, source,
                None if sigma is None else float(sigma)), extra
