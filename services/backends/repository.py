"""Triton model repositories for the local mesh: one directory per backend, one model per variant.

:func:`write_repository` lays out ``<repo>/<variant>/config.pbtxt`` and
``<repo>/<variant>/1/model.py`` (Triton's Python backend, the code in
:mod:`services.backends.demo_model`) for every variant a :class:`BackendConfig` hosts.

The model does REAL numpy compute, not a sleep: ``matmul_iters`` products of a
``matmul_n``x``matmul_n`` float32 matrix per request. Accelerator speed is EMULATED on this
CPU-only machine: the iteration count is divided by the backend's ``speed``
(``max(1, round(iters / speed))``), so an "H100" backend does less real work per call than a
"T4" one and Triton's own statistics show the difference, as they would on real GPUs.

 A decoupled variant is also a demo LLM (``PROMPT`` token ids or ``TEXT``, and ``MAX_TOKENS`` in, one
``TOKEN`` per response out; see :mod:`services.backends.demo_model`). Its prefill and decode
times are EMULATED too, from the same work units: ``matmul_iters / speed`` × the per-unit
milliseconds below, and its ``config.pbtxt`` says so (``llm_speed: "emulated"``) and declares
``switchyard_resumable: "true"``: a generation can continue elsewhere from its prompt plus the
tokens already delivered.

:func:`set_control` is the drill knob: it rewrites ``<repo>/_control.json`` atomically, and
every loaded model picks it up within ~200 ms without a restart (slower work, or hang).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass

from placement.errors import ConfigError
from services.config import BackendConfig, MeshConfig, ModelConfig, VariantConfig

CONTROL_FILE = "_control.json"
MAX_BATCH_SIZE = 8
INPUT_NAME = "INPUT0"
OUTPUT_NAME = "OUTPUT0"
_MODEL_SOURCE = pathlib.Path(__file__).with_name("demo_model.py")
# The demo LLM's EMULATED speed per work unit (matmul_iters / speed): prefill per prompt token,
# decode per output token, a fixed prefill overhead, and how much each extra stream in the
# batch slows decoding.
PREFILL_MS_PER_TOKEN_PER_UNIT = 0.05
DECODE_MS_PER_TOKEN_PER_UNIT = 2.0
PREFILL_BASE_MS = 2.0
BATCH_SLOWDOWN = 0.15
PREFIX_CACHE_BLOCKS = 1024
BLOCK_TOKENS = 16


@dataclass(frozen=True)
class VariantSpec:
    """Everything one variant's Triton model needs, resolved for one backend."""

    name: str
    input_dim: int
    matmul_n: int
    iterations: int
    tokens: int
    decoupled: bool
    seed: int
    work_units: float = 1.0  # matmul_iters / speed, unrounded: scales the emulated LLM speed


@dataclass(frozen=True)
class Control:
    """Runtime knobs read by the running models: work multiplier and hang switch."""

    slow_factor: float = 1.0
    hang: bool = False


def effective_iterations(matmul_iters: int, speed: float) -> int:
    """Matmuls per request on a backend of emulated ``speed``: ``max(1, round(iters/speed))``."""
    return max(1, round(matmul_iters / speed))


def variant_seed(name: str) -> int:
    """A stable seed per variant, so one variant answers identically on every backend."""
    return zlib.crc32(name.encode())


def variant_specs(cfg: MeshConfig, backend: BackendConfig) -> list[VariantSpec]:
    """Resolve the variants ``backend`` hosts against the mesh's models, in config order."""
    by_name: dict[str, tuple[ModelConfig, VariantConfig]] = {
        v.name: (m, v) for m in cfg.models for v in m.variants
    }
    specs = []
    for name in backend.variants:
        if name not in by_name:
            raise ConfigError(f"backend {backend.id!r} hosts unknown variant {name!r}")
        model, variant = by_name[name]
        specs.append(
            VariantSpec(
                name=name,
                input_dim=model.input_dim,
                matmul_n=variant.matmul_n,
                iterations=effective_iterations(variant.matmul_iters, backend.speed),
                # A decoupled model with tokens=0 still streams: one response, then final.
                tokens=max(1, variant.tokens) if model.decoupled else 0,
                decoupled=model.decoupled,
                seed=variant_seed(name),
                work_units=variant.matmul_iters / backend.speed,
            )
        )
    return specs


def llm_parameters(spec: VariantSpec) -> dict[str, object]:
    """The demo LLM's parameters (speeds EMULATED, in ms) for a decoupled variant."""
    return {
        "llm_speed": "emulated",
        "llm_prefill_base_ms": PREFILL_BASE_MS,
        "llm_prefill_ms_per_token": round(PREFILL_MS_PER_TOKEN_PER_UNIT * spec.work_units, 6),
        "llm_decode_ms_per_token": round(DECODE_MS_PER_TOKEN_PER_UNIT * spec.work_units, 6),
        "llm_batch_slowdown": BATCH_SLOWDOWN,
        "llm_prefix_cache_blocks": PREFIX_CACHE_BLOCKS,
        "llm_block_tokens": BLOCK_TOKENS,
        "switchyard_resumable": "true",
    }


def render_config_pbtxt(spec: VariantSpec, *, instances: int = 1) -> str:
    """The ``config.pbtxt`` of one variant; sizes travel as ``parameters`` to the model."""
    params: dict[str, object] = {
        "matmul_n": spec.matmul_n,
        "iterations": spec.iterations,
        "tokens": spec.tokens,
        "input_dim": spec.input_dim,
        "seed": spec.seed,
    }
    dim = spec.input_dim
    inputs = [f'{{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {dim} ] }}']
    outputs = [f'{{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {dim} ] }}']
    if spec.decoupled:
        # The demo LLM's tensors; every input is optional (INPUT0 or PROMPT is checked by
        # the model), so the INPUT0-only streaming contract still holds.
        params.update(llm_parameters(spec))
        inputs = [f'{{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {dim} ] '
                  "optional: true }",
                  '{ name: "PROMPT" data_type: TYPE_INT32 dims: [ -1 ] optional: true }',
                  '{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] optional: true }',
                  '{ name: "MAX_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }']
        outputs.append('{ name: "TOKEN" data_type: TYPE_INT32 dims: [ 1 ] }')
    lines = [
        f'name: "{spec.name}"',
        'backend: "python"',
        f"max_batch_size: {MAX_BATCH_SIZE}",
        f"input [ {', '.join(inputs)} ]",
        f"output [ {', '.join(outputs)} ]",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
    ]
    if spec.decoupled:
        lines.append("model_transaction_policy { decoupled: true }")
    lines += [
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()
    ]
    return "\n".join(lines) + "\n"


def write_repository(
    cfg: MeshConfig, backend: BackendConfig, repo_dir: str | os.PathLike[str], *, instances: int = 1
) -> list[VariantSpec]:
    """Write (or rewrite) the model repository of ``backend`` and reset its control file.

    Model directories left from an older config are removed so Triton loads exactly the
    backend's variants. ``instances`` is the Triton instance count per variant (each one is a
    Python stub process; 1 keeps a many-backend mesh affordable on a small machine).
    """
    repo = pathlib.Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    specs = variant_specs(cfg, backend)
    wanted = {s.name for s in specs}
    for child in repo.iterdir():
        if child.is_dir() and (child / "config.pbtxt").exists() and child.name not in wanted:
            shutil.rmtree(child)
    for spec in specs:
        model_dir = repo / spec.name
        shutil.rmtree(model_dir, ignore_errors=True)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(render_config_pbtxt(spec, instances=instances))
        shutil.copyfile(_MODEL_SOURCE, model_dir / "1" / "model.py")
    set_control(repo, slow_factor=1.0, hang=False)
    return specs


def read_control(repo_dir: str | os.PathLike[str]) -> Control:
    """The knobs currently in ``<repo>/_control.json`` (defaults when absent)."""
    path = pathlib.Path(repo_dir) / CONTROL_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Control()
    return Control(
        slow_factor=float(data.get("slow_factor", 1.0)), hang=bool(data.get("hang", False))
    )


def set_control(
    repo_dir: str | os.PathLike[str],
    *,
    slow_factor: float | None = None,
    hang: bool | None = None,
) -> Control:
    """Change a running backend's knobs without restarting it; unspecified knobs are kept.

    The file is replaced atomically (write + rename), so a model never reads half of it;
    models notice within ~200 ms. Returns the knobs now in force.
    """
    if slow_factor is not None and slow_factor <= 0:
        raise ValueError(f"slow_factor must be > 0, got {slow_factor}")
    repo = pathlib.Path(repo_dir)
    current = read_control(repo)
    new = Control(
        slow_factor=current.slow_factor if slow_factor is None else float(slow_factor),
        hang=current.hang if hang is None else hang,
    )
    fd, tmp = tempfile.mkstemp(dir=repo, prefix=".control-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(new), f)
    os.replace(tmp, repo / CONTROL_FILE)
    return new
