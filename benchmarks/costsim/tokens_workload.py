"""The token workload: LLM streams with prompt and output lengths from a public trace.

Lengths come from the **Azure LLM inference trace 2023** (Patel et al., "Splitwise:
Efficient generative LLM inference using phase splitting", ISCA 2024), released as
``data/AzureLLMInferenceTrace_conv.csv`` (19,366 requests) and
``data/AzureLLMInferenceTrace_code.csv`` (8,819 requests) in
https://github.com/Azure/AzurePublicDataset (read at commit b469a113, described in
``AzureLLMInferenceDataset2023.md``; columns ``ContextTokens`` and ``GeneratedTokens``).
The quantiles below were computed from those two files (numpy, linear interpolation);
``TRACE_STATS`` holds the same files' mean, median and p90 for the tests. A length is
drawn by inverse transform: a uniform ``u`` is mapped through the quantile table, linear
between knots (so the tails stay those of the trace, up to its maximum).

Shared prefixes (stated, not from the trace: the trace has no prompt content): a fraction
``shared_fraction`` of streams belong to a session (a reused system prompt or conversation
history) drawn Zipf(``zipf_s``) from ``sessions`` per region; the first ``min(S, P)`` prompt
tokens of such a stream are its session's prefix (``S`` drawn once per session from the
same prompt distribution times ``prefix_share``). Other streams share nothing.

**Output lengths stop at ``max_tokens``**: a stream's output is ``min(trace length, its
class's max_tokens)``, as a model server stops a generation at the request's ``max_tokens``
(Triton's TensorRT-LLM/vLLM backends, the demo LLM, and the edge's ``generation.py`` and
``placement.streams`` all read it as a hard upper bound). Clipped, not redrawn below it: the
trace's length is what the model would have generated, and the stop cuts that generation;
drawing from the trace's distribution below ``max_tokens`` instead would make the streams that
would have run long short ones. The trace's distribution beyond ``max_tokens`` is cut (its mass
sits at ``max_tokens``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.costsim.scenario import Region, rtt_from_coordinates
from placement.catalog import SAME_REGION_RTT_MS
from placement.errors import ConfigError
from placement.prices import PriceCatalog
from services.prices_file import load_prices

QUANTILES = (0, 0.5, 1, 2.5, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80,
             85, 90, 95, 97.5, 99, 99.5, 99.9, 100)
# (prompt tokens, output tokens) at QUANTILES, per trace file.
AZURE_2023: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "conv": (
        (2, 17, 29, 120, 181, 207, 372, 387, 396, 403, 414, 703, 984, 1020, 1045, 1071, 1097,
         1130, 1189, 1315, 1876, 2734, 4083, 4092, 4142, 4831, 6179, 14050),
        (7, 14, 16, 28, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395,
         400, 411, 424, 451, 522, 601, 643, 954, 1000)),
    "code": (
        (3, 12, 17, 44, 75, 147, 232, 386, 578, 770, 939, 1075, 1261, 1469, 1690, 1909, 2164,
         2433, 2744, 3192, 3920, 5188, 7303, 7435, 7436, 7436, 7437, 7437),
        (6, 6, 6, 6, 6, 7, 7, 8, 9, 9, 10, 11, 12, 13, 14, 16, 18, 20, 24, 29, 39, 55, 90,
         145, 251, 359, 825, 1899)),
}
# mean, median, p90 of (prompt, output) in the same files
TRACE_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "conv": ((1154.7, 1020.0, 2734.5), (211.1, 129.0, 424.0)),
    "code": ((2047.8, 1469.0, 5187.6), (27.9, 13.0, 55.0)),
}
TRACE_SOURCE = ("Azure LLM inference trace 2023 (Splitwise, Patel et al., ISCA 2024), "
                "github.com/Azure/AzurePublicDataset data/AzureLLMInferenceTrace_{conv,code}.csv")


def draw_lengths(trace: str, u_prompt: np.ndarray, u_output: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output tokens for uniforms ``u`` (inverse transform through the table)."""
    if trace not in AZURE_2023:
        raise ConfigError(f"trace {trace!r} is not one of {sorted(AZURE_2023)}")
    qp, qo = AZURE_2023[trace]
    knots = np.array(QUANTILES) / 100.0
    prompt = np.maximum(np.rint(np.interp(u_prompt, knots, qp)), 1).astype(np.int64)
    output = np.maximum(np.rint(np.interp(u_output, knots, qo)), 1).astype(np.int64)
    return prompt, output


@dataclass(frozen=True, slots=True)
class Accelerator:
    """An emulated accelerator running the model: prefill and decode speed, batch, cache."""

    name: str
    prefill_ms_per_token: float
    prefill_base_ms: float
    decode_ms: float  # per output token with a batch of one
    batch_slowdown: float  # decode time × (1 + slowdown × (batch − 1))
    max_batch: int
    cache_tokens: int  # prefix (KV) cache capacity


@dataclass(frozen=True, slots=True)
class TokenVariant:
    name: str
    decode_factor: float  # × the accelerator's decode time (a quantised variant decodes faster)
    prefill_factor: float


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model server: a variant on one GPU of a pool."""

    id: str
    region: str
    cloud: str
    accelerator: Accelerator
    variant: TokenVariant
    price_class: str
    usd_per_hour: float
    price_source: str

    def slowed(self, factor: float) -> Deployment:
        """This deployment with prefill and decode ``factor`` × slower."""
        a = self.accelerator
        return dataclasses.replace(self, accelerator=dataclasses.replace(
            a, prefill_ms_per_token=a.prefill_ms_per_token * factor,
            prefill_base_ms=a.prefill_base_ms * factor, decode_ms=a.decode_ms * factor))

    def tpot_ms(self, batch: int) -> float:
        a = self.accelerator
        return a.decode_ms * self.variant.decode_factor * (
            1.0 + a.batch_slowdown * (max(batch, 1) - 1))

    def prefill_ms(self, tokens: int) -> float:
        a = self.accelerator
        return a.prefill_base_ms + tokens * a.prefill_ms_per_token * self.variant.prefill_factor


@dataclass(frozen=True, slots=True)
class StreamClass:
    name: str
    share: float
    ttft_ms: float
    tpot_ms: float
    max_tokens: int  # what its callers send as max_tokens: the output stops there


@dataclass(frozen=True, slots=True)
class Slowdown:
    """From ``at_s`` on, the deployments whose id starts with ``prefix`` prefill and decode
    ``factor`` × slower (a throttled or noisy-neighboured GPU; emulated)."""

    at_s: float
    prefix: str
    factor: float


@dataclass(frozen=True, slots=True)
class TokenScenario:
    name: str
    seed: int
    trace: str
    duration_s: float
    quick_duration_s: float
    warmup_s: float
    noise_sigma: float
    shared_fraction: float
    sessions: int
    zipf_s: float
    prefix_share: float
    regions: dict[str, Region]
    rtt_ms: dict[tuple[str, str], float]
    classes: tuple[StreamClass, ...]
    deployments: tuple[Deployment, ...]
    source: str
    slowdowns: tuple[Slowdown, ...] = ()

    def rtt(self, a: str, b: str) -> float:
        if a == b:
            return SAME_REGION_RTT_MS
        return self.rtt_ms.get((a, b)) or self.rtt_ms[(b, a)]


@dataclass(frozen=True, slots=True)
class Streams:
    """The stream trace every policy sees (common random numbers)."""

    t_ms: np.ndarray  # arrival at the edge, sorted
    region: np.ndarray  # index into sorted region names
    klass: np.ndarray  # index into classes
    prompt: np.ndarray
    output: np.ndarray
    session: np.ndarray  # -1 = no shared prefix; else a global session index
    shared: np.ndarray  # prompt tokens that are the session's prefix
    noise: np.ndarray  # lognormal speed noise (mean 1) on this stream's prefill and decode

    def __len__(self) -> int:
        return len(self.t_ms)


def generate_streams(s: TokenScenario, quick: bool) -> Streams:
    """Poisson arrivals per region, lengths from the trace, sessions by Zipf popularity."""
    rng = np.random.default_rng(s.seed)
    duration_ms = (s.quick_duration_s if quick else s.duration_s) * 1000.0
    names = sorted(s.regions)
    ts, rs = [], []
    for i, name in enumerate(names):
        rate = s.regions[name].load_rps / 1000.0
        n = rng.poisson(rate * duration_ms)
        ts.append(np.sort(rng.uniform(0.0, duration_ms, n)))
        rs.append(np.full(n, i))
    t = np.concatenate(ts)
    region = np.concatenate(rs)
    order = np.argsort(t, kind="stable")
    t, region = t[order], region[order]
    n = len(t)
    shares = np.array([c.share for c in s.classes])
    klass = rng.choice(len(s.classes), size=n, p=shares / shares.sum())
    prompt, output = draw_lengths(s.trace, rng.random(n), rng.random(n))
    # the server stops at the request's max_tokens (clipped, not redrawn: same draws as before)
    output = np.minimum(output, np.array([c.max_tokens for c in s.classes])[klass])
    # sessions: per region, Zipf popularity over ``sessions`` ids; prefix per session
    ranks = np.arange(1, s.sessions + 1, dtype=float)
    pop = ranks ** -s.zipf_s
    pop /= pop.sum()
    in_session = rng.random(n) < s.shared_fraction
    local = rng.choice(s.sessions, size=n, p=pop)
    session = np.where(in_session, region * s.sessions + local, -1)
    prefix_len, _ = draw_lengths(s.trace, rng.random(len(names) * s.sessions),
                                 np.zeros(len(names) * s.sessions))
    prefix_len = np.maximum((prefix_len * s.prefix_share).astype(np.int64), 1)
    shared = np.where(session >= 0, np.minimum(prefix_len[np.maximum(session, 0)], prompt), 0)
    sigma = s.noise_sigma
    noise = np.exp(sigma * rng.standard_normal(n) - sigma * sigma / 2)
    return Streams(t, region, klass, prompt, output, session, shared, noise)


# -- the scenario file ---------------------------------------------------------------------

def load_token_scenario(path: str | pathlib.Path) -> TokenScenario:
    """Read a token scenario (``benchmarks/scenarios/tokens/README.md`` documents it)."""
    p = pathlib.Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"scenario file {p} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_token_scenario(raw, p.resolve().parent, str(p))


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where} lacks {key!r}")
    return d[key]


def parse_token_scenario(raw: dict[str, Any], base_dir: pathlib.Path,
                         source: str) -> TokenScenario:
    head = raw.get("scenario", {})
    wl = raw.get("workload", {})
    regions = {}
    for i, r in enumerate(raw.get("regions", [])):
        where = f"regions[{i}]"
        name = _req(r, "name", where)
        regions[name] = Region(name, _req(r, "cloud", where), float(r.get("lat", 0.0)),
                               float(r.get("lon", 0.0)), 0.0, float(_req(r, "load_rps", where)))
    if not regions:
        raise ConfigError(f"{source}: no regions")
    rtt_cfg = raw.get("rtt_model", {})
    base, km_per_ms = float(rtt_cfg.get("base_ms", 2.0)), float(rtt_cfg.get("km_per_ms", 66.7))
    names = sorted(regions)
    rtt = {(a, b): rtt_from_coordinates(regions[a], regions[b], base, km_per_ms)
           for i, a in enumerate(names) for b in names[i + 1:]}
    accels = {}
    for name, a in raw.get("accelerators", {}).items():
        accels[name] = Accelerator(name, float(a["prefill_ms_per_token"]),
                                   float(a.get("prefill_base_ms", 0.0)), float(a["decode_ms"]),
                                   float(a.get("batch_slowdown", 0.0)), int(a["max_batch"]),
                                   int(a["cache_tokens"]))
    variants = {v["name"]: TokenVariant(v["name"], float(v.get("decode_factor", 1.0)),
                                        float(v.get("prefill_factor", 1.0)))
                for v in raw.get("variants", [])}
    if not variants:
        raise ConfigError(f"{source}: no variants")
    classes = tuple(StreamClass(c["name"], float(c["share"]), float(c["ttft_ms"]),
                                float(c["tpot_ms"]), int(c.get("max_tokens", 512)))
                    for c in raw.get("classes", []))
    if not classes:
        raise ConfigError(f"{source}: no classes")
    prices = PriceCatalog(load_prices(base_dir / head.get("prices_file",
                                                          "../../../examples/prices.toml")))
    deployments = []
    for i, pc in enumerate(raw.get("pools", [])):
        where = f"pools[{i}]"
        region = _req(pc, "region", where)
        if region not in regions:
            raise ConfigError(f"{where}.region {region!r} is not in regions")
        accel = _req(pc, "accelerator", where)
        if accel not in accels:
            raise ConfigError(f"{where}.accelerator {accel!r} is not in [accelerators]")
        variant = _req(pc, "variant", where)
        if variant not in variants:
            raise ConfigError(f"{where}.variant {variant!r} is not in variants")
        price_class = pc.get("price_class", "on-demand")
        cloud = regions[region].cloud
        entry = prices.lookup(accel, cloud, region, price_class)
        if entry is None:
            raise ConfigError(f"{where}: no price for {accel} {price_class} in "
                              f"{cloud}/{region} in the price file")
        short = accel.removeprefix("nvidia-")
        for k in range(int(pc.get("gpus", 1))):
            deployments.append(Deployment(
                f"{region}.{short}.{price_class}.{variant}.{k}", region, cloud, accels[accel],
                variants[variant], price_class, entry.usd_per_gpu_hour, entry.source))
    if len({d.id for d in deployments}) != len(deployments):
        raise ConfigError(f"{source}: two pools give the same deployment ids")
    slowdowns = []
    for i, ev in enumerate(raw.get("slowdowns", [])):
        where = f"slowdowns[{i}]"
        prefix, factor = str(_req(ev, "deployments", where)), float(_req(ev, "factor", where))
        if not any(d.id.startswith(prefix) for d in deployments):
            raise ConfigError(f"{where}.deployments {prefix!r} matches no deployment id")
        if factor <= 0:
            raise ConfigError(f"{where}.factor must be > 0; got {factor}")
        slowdowns.append(Slowdown(float(_req(ev, "at_s", where)), prefix, factor))
    return TokenScenario(
        name=head.get("name", pathlib.Path(source).stem), seed=int(head.get("seed", 1)),
        trace=wl.get("trace", "conv"), duration_s=float(head.get("duration_s", 600)),
        quick_duration_s=float(head.get("quick_duration_s", 240)),
        warmup_s=float(head.get("warmup_s", 30)), noise_sigma=float(wl.get("noise_sigma", 0.1)),
        shared_fraction=float(wl.get("shared_fraction", 0.5)),
        sessions=int(wl.get("sessions", 100)), zipf_s=float(wl.get("zipf_s", 1.0)),
        prefix_share=float(wl.get("prefix_share", 0.5)), regions=regions, rtt_ms=rtt,
        classes=classes, deployments=tuple(deployments), source=source,
        slowdowns=tuple(slowdowns))

