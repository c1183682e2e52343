"""A static backend named like a pool's instance (pool ``east``, backend ``east-1``) is
refused when the config loads (review10 finding 6: it was accepted, then the capacity loop's
start deregistered it as a previous placement's leftover instance, and the pool's first
instance would have taken its id). Names that are not ``{pool}-<digits>`` stay allowed."""

from __future__ import annotations

import pathlib

import pytest

from placement.errors import ConfigError
from services.config import load_config
from tests.unit.test_capacity_loop import MESH, PRICES


def write(tmp_path: pathlib.Path, backend_id: str) -> pathlib.Path:
    static = f"""
[[backends]]
id = "{backend_id}"
region = "r-east"
accelerator = "gpu-cheap"
price_class = "on-demand"
grpc_port = 8311
metrics_port = 8312
variants = ["small"]
"""
    (tmp_path / "prices.toml").write_text(PRICES)
    path = tmp_path / "mesh.toml"
    path.write_text(MESH.replace("backends = []\n", "").replace("[[models]]",
                                                                static + "\n[[models]]", 1))
    return path


@pytest.mark.parametrize("backend_id", ["east-1", "east-12"])
def test_a_backend_named_like_a_pool_instance_is_refused_naming_both(
        tmp_path: pathlib.Path, backend_id: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, backend_id))
    said = str(err.value)
    assert f"capacity.pools[0].id 'east': backend id '{backend_id}'" in said, said
    assert "named like one of its instances" in said and "rename" in said


@pytest.mark.parametrize("backend_id", ["east-1b", "east-west", "eastern-1"])
def test_other_backend_names_beside_a_pool_are_accepted(
        tmp_path: pathlib.Path, backend_id: str) -> None:
    cfg = load_config(write(tmp_path, backend_id))
    assert [b.id for b in cfg.backends] == [backend_id]
