"""The mesh configuration: one TOML file, read once, validated, passed in.

Every process (placement, edges, backends, agents, the CLI) reads the same file through
:func:`load_config`; nothing reads the environment at import time. Validation errors name
the path and the offending values, e.g. ``edges[1].region 'eu-west' is not in regions``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import pathlib
import tomllib
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from placement.errors import ConfigError
from placement.registry import PROFILES
from services.capacity.settings import CapacityConfig, check_capacity
from services.discovery.settings import ConsulSettings
from services.security.settings import LOCAL_DEFAULT, SecuritySettings, check_references


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionConfig(_Strict):
    name: str
    cloud: str


class RttConfig(_Strict):
    """Planned round-trip time between two regions (symmetric unless both directions are given)."""

    a: str
    b: str
    ms: float = Field(ge=0)


class VariantConfig(_Strict):
    """A variant of a logical model: what a backend serves under ``name``.

    ``matmul_n`` and ``matmul_iters`` size the real numpy compute the demo Triton model does
    per request (bigger = slower, like a larger model); ``tokens`` is the number of streamed
    responses a decoupled (LLM-like) variant sends per request.
    """

    name: str
    quality: float = Field(ge=0, le=1)
    matmul_n: int = Field(default=128, ge=8, le=4096)
    matmul_iters: int = Field(default=4, ge=1, le=10_000)
    tokens: int = Field(default=0, ge=0, le=4096)


class ModelConfig(_Strict):
    """A logical model clients call by name, with its variants and default SLO."""

    name: str
    default_slo_ms: float = Field(gt=0)
    decoupled: bool = False
    variants: list[VariantConfig]
    input_dim: int = Field(default=16, ge=1)


class BackendConfig(_Strict):
    """One Triton server: where it listens and the hardware it stands for.

    ``speed`` emulates the accelerator's speed on this CPU-only machine: the demo model's
    matmul work is divided by it (an H100 backend does less real work per call than a T4 one).
    """

    id: str
    region: str
    accelerator: str
    accelerator_count: int = Field(default=1, ge=1)
    price_class: Literal["on-demand", "spot", "reserved"] = "on-demand"
    host: str = "127.0.0.1"
    grpc_port: int = Field(ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    variants: list[str]
    max_concurrency: int = Field(default=4, ge=1)
    speed: float = Field(default=1.0, gt=0)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class EdgeConfig(_Strict):
    id: str
    region: str
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)


class AgentConfig(_Strict):
    """The node agent ``switchyard up`` runs for the file's backends."""
    host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)  # its /metrics; 0: none served


class ShardConfig(_Strict):
    """One placement shard: the backend regions it owns, served by ``replicas`` (host:port;
    the first is the primary, the rest standbys an edge or agent fails over to)."""

    replicas: list[str] = Field(min_length=1)
    regions: list[str] = Field(min_length=1)
    # Each replica's /metrics port, in the order of ``replicas``; empty: none served.
    metrics_ports: list[int] = []


class PlacementConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=50050, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Extra replicas (host:port) an edge may fail over to; the first is `host:port` above.
    replicas: list[str] = []
    # Scale-out (issue 15): replicas that share the fleet by backend region. Empty (the
    # default): every replica owns every backend. See services/placement/shard.py.
    shards: list[ShardConfig] = []
    coalesce_ms: float = Field(default=50, ge=0)
    stale_after_s: float = Field(default=5, gt=0)


class RoutingConfig(_Strict):
    """Per-call policy knobs shared by placement (tables, Explain) and edges (final choice)."""

    profile: str = "cheapest"
    spread_band: float = Field(default=0.05, ge=0, le=1)
    slo_margin_ms: float = Field(default=2.0, ge=0)
    deadline_margin_ms: float = Field(default=5.0, ge=0)
    fail_fast: bool = False
    observed_min_samples: int = Field(default=20, ge=1)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        if name not in PROFILES:  # the edge looks every call's profile up among these
            close = difflib.get_close_matches(name, PROFILES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"routing.profile {name!r} is not a routing profile; {hint}"
                             f"write one of: {', '.join(PROFILES)}")
        return name


class EdgeRuntimeConfig(_Strict):
    # What runs each edge: the Python router, or Envoy configured by placement over xDS
    # (services/xds; a first slice: model routing, failover, variant rewrite; issue 12).
    engine: Literal["python", "envoy"] = "python"
    # Envoy edges: what runs the listener's per-call work (hints, SLO class, body peek, the
    # cost/SLO trailers): the C dynamic module (native/, built by native/build.sh) or the
    # Lua (services/xds/lua.py). "auto": the module when its library loads, else the Lua,
    # logged with why; "module": the edge refuses to start without it. The Envoy launcher
    # decides and its bootstrap tells placement (node metadata), which pushes per node.
    envoy_filters: Literal["auto", "module", "lua"] = "auto"
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min_per_s: float = Field(default=10, ge=0)
    eject_consecutive_failures: int = Field(default=3, ge=1)
    eject_base_s: float = Field(default=5, gt=0)
    eject_max_share: float = Field(default=0.5, gt=0, le=1)
    eject_failure_rate: float = Field(default=0.5, gt=0, le=1)  # over eject_interval_s
    eject_min_requests: int = Field(default=20, ge=1)
    eject_interval_s: float = Field(default=10.0, gt=0)
    health_interval_s: float = Field(default=0.25, gt=0)
    report_interval_s: float = Field(default=2.0, gt=0)
    slow_start_s: float = Field(default=10.0, ge=0)  # 0 = recovered deployments get full share
    # Envoy edges: placement ramps a deployment it sees come back over slow_start_s in the
    # compiled weights (services/xds/returns.py). Off: in the cost simulator it cost up to
    # 10 % more per call and gained at most 0.08 point (benchmarks/RESULTS.md "Envoy slow
    # start"); the simulator has no cold backend, which is what a ramp is for.
    envoy_slow_start: bool = False
    # Hedge calls whose SLO is at most this (ms): a second attempt after the first
    # candidate's p95; the loser is cancelled. 0 = never hedge.
    hedge_max_slo_ms: float = Field(default=50.0, ge=0)
    uvloop: bool = True
    drain_s: float = Field(default=0.5, ge=0)  # NOT_SERVING this long before stopping


class WanConfig(_Strict):
    """User-space emulation of inter-region RTT (the kernel here has no netem).

    When on, `switchyard up` starts a delaying TCP relay per (edge region, remote backend)
    and edges dial the relay instead of the backend; the relay holds every chunk for half
    the configured RTT in each direction. Labelled "emulated" everywhere it shows.
    """

    emulate: bool = True
    relay_base_port: int = Field(default=52000, ge=1024, le=65000)


class MeshConfig(_Strict):
    regions: list[RegionConfig]
    rtt: list[RttConfig] = []
    models: list[ModelConfig]
    backends: list[BackendConfig]
    edges: list[EdgeConfig] = []
    placement: PlacementConfig = PlacementConfig()
    agent: AgentConfig = AgentConfig()
    routing: RoutingConfig = RoutingConfig()
    edge: EdgeRuntimeConfig = EdgeRuntimeConfig()
    wan: WanConfig = WanConfig()
    prices_file: str = "prices.toml"
    run_dir: str = ".run"
    discovery: Literal["static", "consul"] = "static"
    consul: ConsulSettings = ConsulSettings()
    # TLS, identities, tenants, limits; without a [security] section: plaintext, said loudly.
    security: SecuritySettings = LOCAL_DEFAULT
    capacity: CapacityConfig = CapacityConfig()  # the capacity loop (issue 13), off by default
    # Directory the file was read from; relative paths in the file resolve against it.
    base_dir: str = "."

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, raw: object) -> object:
        _refuse_inf_nan(raw, ())
        return raw

    @model_validator(mode="after")
    def _references(self) -> MeshConfig:
        regions = {r.name for r in self.regions}
        variants = {v.name for m in self.models for v in m.variants}
        _unique("regions", [r.name for r in self.regions])
        _unique("models", [m.name for m in self.models])
        _unique("backends", [b.id for b in self.backends])
        _unique("edges", [e.id for e in self.edges])
        _unique("variants", [v.name for m in self.models for v in m.variants])
        for i, rtt in enumerate(self.rtt):
            for end in ("a", "b"):
                if getattr(rtt, end) not in regions:
                    raise ValueError(f"rtt[{i}].{end} {getattr(rtt, end)!r} is not in regions")
        for i, b in enumerate(self.backends):
            if b.region not in regions:
                raise ValueError(f"backends[{i}].region {b.region!r} is not in regions "
                                 f"{sorted(regions)}")
            for v in b.variants:
                if v not in variants:
                    raise ValueError(f"backends[{i}].variants {v!r} is not a variant of any "
                                     f"model {sorted(variants)}")
        for i, e in enumerate(self.edges):
            if e.region not in regions:
                raise ValueError(f"edges[{i}].region {e.region!r} is not in regions "
                                 f"{sorted(regions)}")
        check_shards(self.placement.shards, regions, [b.region for b in self.backends])
        check_references(self.security, {r.name: r.cloud for r in self.regions},
                         [b.id for b in self.backends])
        check_capacity(self.capacity, regions, variants, [b.id for b in self.backends])
        if self.edge.engine == "envoy":
            check_envoy_security(self.security)
        return self

    def path(self, relative: str) -> pathlib.Path:
        """Resolve a path from the file against the file's own directory."""
        p = pathlib.Path(relative)
        return p if p.is_absolute() else pathlib.Path(self.base_dir) / p

    def region_cloud(self, region: str) -> str:
        return next(r.cloud for r in self.regions if r.name == region)


def check_envoy_security(sec: SecuritySettings) -> None:
    """What Envoy edges cannot carry of ``[security]`` is refused, never served loosely.

    They carry TLS (client certificates as ``edge_client_certs`` says), mTLS to placement and
    to their slow path, and tenants (their calls take the slow path, the Python edge's
    tenant gate): identified by a bearer token, or by a client certificate, which Envoy
    forwards to the slow path (``services/security/xfcc.py``). Envoy's forwarded certificate
    names DNS and URI SANs and the subject, not IP addresses, so a ``client_san`` that is an
    IP address (or holds a double quote, which the header escapes) is refused: such a
    tenant's calls could not be told apart and would be served as anonymous."""
    for i, t in enumerate(sec.tenants):
        if t.client_san and (_is_ip(t.client_san) or '"' in t.client_san):
            raise ValueError(
                f"security.tenants[{i}].client_san {t.client_san!r} (tenant {t.name!r}): "
                "edge.engine 'envoy' forwards a caller's DNS and URI names and subject, not "
                "IP addresses or names with a double quote; give the tenant a DNS or URI "
                "name, a token_sha256, or use engine = 'python'")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_shards(shards: list[ShardConfig], regions: set[str], backend_regions: list[str]
                 ) -> None:
    """Shards own known, disjoint regions, and every backend's region has an owner."""
    if not shards:
        return
    owner: dict[str, int] = {}
    address: dict[str, int] = {}
    for i, shard in enumerate(shards):
        for r in shard.regions:
            if r not in regions:
                raise ValueError(f"placement.shards[{i}].regions {r!r} is not in regions "
                                 f"{sorted(regions)}")
            if r in owner:
                raise ValueError(f"placement.shards[{i}].regions {r!r} is already owned by "
                                 f"placement.shards[{owner[r]}]")
            owner[r] = i
        if shard.metrics_ports and len(shard.metrics_ports) != len(shard.replicas):
            raise ValueError(f"placement.shards[{i}].metrics_ports has "
                             f"{len(shard.metrics_ports)} ports for {len(shard.replicas)} "
                             "replicas; give one per replica, or none")
        for a in shard.replicas:
            if a in address:
                raise ValueError(f"placement.shards[{i}].replicas {a!r} is already a replica "
                                 f"of placement.shards[{address[a]}]")
            address[a] = i
    for i, r in enumerate(backend_regions):
        if r not in owner:
            raise ValueError(f"backends[{i}].region {r!r} is owned by no placement.shards "
                             f"entry (owned: {sorted(owner)})")


def _refuse_inf_nan(value: object, loc: tuple[int | str, ...]) -> None:
    """TOML's ``inf`` / ``nan`` in any table of the file (nested ones included) is refused,
    naming the key: an interval, lease or limit of ``inf`` never runs out (a backend lease of
    ``inf`` locks a restarted agent out for good)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{_where(loc)} = {value}: write a finite number (TOML inf and nan "
                         "are not accepted), or leave the key out for its default")
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for k, v in items:
        _refuse_inf_nan(v, (*loc, k))


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"{what}[{i}] {n!r} is defined twice")
        seen.add(n)


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> MeshConfig:
    """Read and validate the mesh file; ``SWITCHYARD_RUN_DIR`` in ``env`` overrides run_dir."""
    p = pathlib.Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist; pass --config PATH") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {p} is a directory, not a file; pass --config "
                          "PATH of a mesh TOML file (e.g. examples/mesh.toml)") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}); pass "
                          "--config PATH of a mesh TOML file") from exc
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read ({exc.strerror}); check its "
                          "permissions, or pass --config PATH") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    raw.setdefault("base_dir", str(p.resolve().parent))
    env = env if env is not None else {}
    if env.get("SWITCHYARD_RUN_DIR"):
        raw["run_dir"] = env["SWITCHYARD_RUN_DIR"]
    try:
        return MeshConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {_error_line(err)}" for err in exc.errors()]
        raise ConfigError(f"{p} is not a valid mesh config:\n" + "\n".join(lines)) from exc


def _where(loc: tuple[int | str, ...]) -> str:
    """``('backends', 0, 'grpc_port')`` -> ``backends[0].grpc_port`` (as the file's tables)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model (table) at ``loc``, found by following field annotations."""
    model: type[BaseModel] = MeshConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        found = _model_in(field.annotation)
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _model_in(a))), None)


def _error_line(err: ErrorDetails) -> str:
    """One pydantic error as the operator wrote it: where, the value given, what is wrong, and
    for an unknown key the known ones (the closest first)."""
    loc = tuple(err["loc"])
    where = _where(loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        if model is MeshConfig:
            known.remove("base_dir")
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{where}: unknown key {loc[-1]!r}; {hint}known keys here: {', '.join(known)}"
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    if err["type"] == "value_error":  # our own checks: their message names the path
        return err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{where}: {err['msg']}{shown}"
