"""Triton model repositories written from config, and the drill control file."""

from __future__ import annotations

import json
import pathlib

import pytest

from services.backends.repository import (
    CONTROL_FILE,
    Control,
    effective_iterations,
    read_control,
    set_control,
    variant_specs,
    write_repository,
)
from services.config import MeshConfig, load_config

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"


@pytest.fixture
def example() -> MeshConfig:
    return load_config(EXAMPLE)


@pytest.mark.parametrize(
    ("iters", "speed", "expected"),
    [(48, 6.0, 8), (24, 1.0, 24), (4, 6.0, 1), (1, 0.5, 2), (6, 4.0, 2)],
)
def test_speed_divides_the_work(iters: int, speed: float, expected: int) -> None:
    assert effective_iterations(iters, speed) == expected


def test_specs_resolve_variants_for_a_backend(example: MeshConfig) -> None:
    h100 = next(b for b in example.backends if b.id == "use1-h100")
    specs = {s.name: s for s in variant_specs(example, h100)}
    assert list(specs) == ["summarize-small", "summarize-large", "generate-large"]
    assert specs["summarize-large"].iterations == 8  # 48 / speed 6
    assert not specs["summarize-large"].decoupled
    assert specs["generate-large"].decoupled
    assert specs["generate-large"].tokens == 8


def test_repository_layout_and_config(example: MeshConfig, tmp_path: pathlib.Path) -> None:
    t4 = next(b for b in example.backends if b.id == "use1-t4")
    (tmp_path / "stale-variant").mkdir()
    (tmp_path / "stale-variant" / "config.pbtxt").write_text('name: "stale-variant"')
    write_repository(example, t4, tmp_path)

    models = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert models == ["generate-small", "summarize-small"]
    pbtxt = (tmp_path / "summarize-small" / "config.pbtxt").read_text()
    assert 'name: "summarize-small"' in pbtxt
    assert 'backend: "python"' in pbtxt
    assert "max_batch_size: 8" in pbtxt
    assert 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ]' in pbtxt
    assert 'name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ]' in pbtxt
    assert 'key: "iterations" value: { string_value: "24" }' in pbtxt
    assert "decoupled" not in pbtxt
    gen = (tmp_path / "generate-small" / "config.pbtxt").read_text()
    assert "model_transaction_policy { decoupled: true }" in gen
    assert 'key: "tokens" value: { string_value: "8" }' in gen
    assert "class TritonPythonModel" in (tmp_path / "summarize-small/1/model.py").read_text()
    assert read_control(tmp_path) == Control(slow_factor=1.0, hang=False)


def test_set_control_merges_and_replaces_atomically(tmp_path: pathlib.Path) -> None:
    assert read_control(tmp_path) == Control()
    assert set_control(tmp_path, slow_factor=3.0) == Control(slow_factor=3.0, hang=False)
    assert set_control(tmp_path, hang=True) == Control(slow_factor=3.0, hang=True)
    assert json.loads((tmp_path / CONTROL_FILE).read_text()) == {"slow_factor": 3.0, "hang": True}
    assert [p.name for p in tmp_path.iterdir()] == [CONTROL_FILE]  # no temp files left
    with pytest.raises(ValueError, match="slow_factor"):
        set_control(tmp_path, slow_factor=0)
