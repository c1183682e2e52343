"""What placement accepts in a registration: every field checked, every refusal names it.

``check_backend`` raises ``InvalidRequest`` (INVALID_ARGUMENT) with the field, the value
and what would be accepted:

- ``id``: 1..128 characters of ``[A-Za-z0-9._-]`` (it ends up in route tables, metric
  labels, log lines and file names);
- ``endpoint``: ``host:port`` (``[v6addr]:port`` for IPv6), port 1..65535;
- ``region`` in the catalog and ``cloud`` that region's cloud;
- ``accelerator`` and ``price_class`` among those the price list prices (an unpriced
  backend could never be costed);
- ``accelerator_count`` and ``max_concurrency`` at least 1 and at most ``MAX_ACCELERATORS``,
  ``MAX_CONCURRENCY`` (see below);
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

Every other number of an observation is bounded by what a real edge can send, so that no
sum or average placement keeps can become inf or NaN (two 1e308 call rates summed into a
slot share were inf, two 1e308 stream costs an infinite $ per 1M tokens):

- ``p50_ms``, ``p95_ms``, ``rtt_ms`` at most ``MAX_MS`` (10^12 ms, ~31 years: no edge
  measured a call or stream that long, and a stream held open for days is still accepted);
- ``calls_per_s`` at most ``MAX_CALLS_PER_S`` (a million calls a second to one
  deployment, past any edge);
- ``failures`` at most ``MAX_COUNT``;
- ``streams``: its token-speed fit finite and within ``MAX_MS`` either way (a least-squares
  fit may come out negative; placement counts that as unmeasured), ``attempts``,
  ``tokens_in``, ``tokens_out`` at most ``MAX_COUNT`` (10^12, past a fleet's tokens
  between two reports) and ``input_usd``, ``output_usd`` finite, >= 0 and at most
  ``MAX_USD`` (a million dollars of one deployment's GPU time between two reports).

``gpu_problems`` is the same rule for an agent's NVML readings (``GpuReading``): a number
no GPU can have — utilisations outside [0, 100] %, power outside [0, ``MAX_POWER_W``],
temperatures outside [``MIN_TEMPERATURE_C``, ``MAX_TEMPERATURE_C``], NaN, memory used or
free over total — is a driver fault, not a reason to lose the report's Triton counters (what
routing runs on): the agent leaves it unset before sending, and placement's ingest
(``clean_gpus``) reads it as unset too, for an agent that sent it anyway, and logs it
(``gpu_reading_impossible``, once per backend and field). A registration's
``accelerator_count`` is at most ``MAX_ACCELERATORS`` and ``max_concurrency`` at most
``MAX_CONCURRENCY`` (512: the M/M/c wait the brain computes over a backend's slots,
``placement.queueing.erlang_c``, loops once per slot and overflows to NaN past ~750; 2^32
slots held an edge's SLO filter for minutes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

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
MAX_MS = 1e12  # ~31 years: longer than any process runs (a stream held open for days is
# still a real measurement, never refused), short enough that no sum placement keeps is inf
MAX_CALLS_PER_S = 1e6  # calls a second one edge sends one deployment: past any edge
MAX_COUNT = 10**12  # failures, stream attempts and tokens between two reports
MAX_USD = 1e6  # $ of one deployment's GPU time between two reports
MAX_ACCELERATORS = 1024  # GPUs behind one backend
MAX_CONCURRENCY = 512  # slots of one backend: the most placement.queueing computes finite
MAX_POWER_W = 10_000.0  # one GPU's draw (the largest boards are ~1 kW)
MIN_TEMPERATURE_C, MAX_TEMPERATURE_C = -273.15, 1_000.0
_OBS_BOUNDS = (("p50_ms", MAX_MS), ("p95_ms", MAX_MS), ("rtt_ms", MAX_MS),
               ("calls_per_s", MAX_CALLS_PER_S))
_STREAM_FIT = ("prefill_ms_per_token", "tpot_base_ms", "tpot_per_stream_ms")
_STREAM_COUNTS = ("attempts", "tokens_in", "tokens_out")
_STREAM_USD = ("input_usd", "output_usd")
# GpuReading's doubles: (field, low, high)
_GPU_BOUNDS = (("gpu_util_pct", 0.0, 100.0), ("mem_util_pct", 0.0, 100.0),
               ("power_w", 0.0, MAX_POWER_W), ("power_limit_w", 0.0, MAX_POWER_W),
               ("temperature_c", MIN_TEMPERATURE_C, MAX_TEMPERATURE_C),
               ("temperature_slowdown_c", MIN_TEMPERATURE_C, MAX_TEMPERATURE_C))


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
    if b.accelerator_count > MAX_ACCELERATORS:
        raise InvalidRequest(f"backend.accelerator_count {b.accelerator_count} must be <= "
                             f"{MAX_ACCELERATORS} (GPUs behind one backend)")
    if b.max_concurrency < 1:
        raise InvalidRequest(f"backend.max_concurrency {b.max_concurrency} must be >= 1 "
                             "(requests the backend runs at once)")
    if b.max_concurrency > MAX_CONCURRENCY:
        raise InvalidRequest(f"backend.max_concurrency {b.max_concurrency} must be <= "
                             f"{MAX_CONCURRENCY} (requests the backend runs at once; "
                             "placement's M/M/c wait is computed over that many slots)")
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
        for name, high in _OBS_BOUNDS:
            value = getattr(o, name)
            if not 0.0 <= value <= high:  # NaN fails too
                raise InvalidRequest(f"observations[{i}].{name} {value!r} "
                                     f"({o.deployment_id[:64]!r}) must be finite, >= 0 and "
                                     f"<= {high:g}")
        if o.failures > MAX_COUNT:
            raise InvalidRequest(f"observations[{i}].failures {o.failures} "
                                 f"({o.deployment_id[:64]!r}) is over {MAX_COUNT:g}")
        if o.HasField("streams"):
            _check_streams(o.streams, f"observations[{i}].streams", o.deployment_id)
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


def _check_streams(s: telemetry_pb2.StreamObservation, where: str, deployment: str) -> None:
    for name in _STREAM_FIT:
        value = getattr(s, name)
        if not -MAX_MS <= value <= MAX_MS:  # NaN fails too
            raise InvalidRequest(f"{where}.{name} {value!r} ({deployment[:64]!r}) must be "
                                 f"finite and within +-{MAX_MS:g} ms")
    if not 0.0 <= s.weight < math.inf:
        raise InvalidRequest(f"{where}.weight {s.weight!r} ({deployment[:64]!r}) must be "
                             f"finite and >= 0")
    for name in _STREAM_COUNTS:
        if (count := getattr(s, name)) > MAX_COUNT:
            raise InvalidRequest(f"{where}.{name} {count} ({deployment[:64]!r}) is over "
                                 f"{MAX_COUNT:g} between two reports")
    for name in _STREAM_USD:
        value = getattr(s, name)
        if not 0.0 <= value <= MAX_USD:
            raise InvalidRequest(f"{where}.{name} {value!r} ({deployment[:64]!r}) must be "
                                 f"finite, >= 0 and <= {MAX_USD:g} $ between two reports")


def gpu_problems(g: telemetry_pb2.GpuReading) -> list[tuple[str, str]]:
    """Each field of ``g`` no GPU can report, with why: (field, what is wrong). An unset
    field reads 0, within every bound, so only set fields can fail (no HasField per field:
    placement runs this on every changed reading)."""
    out: list[tuple[str, str]] = []
    for name, low, high in _GPU_BOUNDS:
        if not low <= (value := getattr(g, name)) <= high:  # NaN fails too
            out.append((name, f"{value!r} must be finite and within [{low:g}, {high:g}]"))
    total = g.mem_total_bytes
    for name in ("mem_used_bytes", "mem_free_bytes"):
        if getattr(g, name) > total and g.HasField("mem_total_bytes"):
            out.append((name, f"{getattr(g, name)} is over mem_total_bytes {total}"))
    return out


def clean_gpus(report: telemetry_pb2.TelemetryReport
               ) -> tuple[Sequence[telemetry_pb2.GpuReading], list[str]]:
    """``report``'s GPU readings with every number no GPU can have left unset (read as a
    field the GPU does not report), and what was dropped (``gpus[i].field value ...``)."""
    dropped: list[str] = []
    readings: list[telemetry_pb2.GpuReading] = []
    for i, g in enumerate(report.gpus):
        problems = gpu_problems(g)
        if problems:
            g = telemetry_pb2.GpuReading.FromString(g.SerializeToString())  # noqa: PLW2901
            for name, why in problems:
                g.ClearField(name)
                dropped.append(f"gpus[{i}].{name} {why}")
        readings.append(g)
    return (readings, dropped) if dropped else (report.gpus, dropped)
