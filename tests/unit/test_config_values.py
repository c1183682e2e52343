"""Values the mesh file's checks refuse at load, naming the key and what to write, rather than
a process that starts and then misbehaves (review11 findings 4 and 8)."""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest

from placement.errors import ConfigError
from placement.registry import PROFILES, build_profile
from services.config import MeshConfig, load_config

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _raw() -> dict[str, object]:
    raw = tomllib.loads((EXAMPLES / "mesh.toml").read_text())
    raw["base_dir"] = str(EXAMPLES)
    return raw


def _load(tmp_path: pathlib.Path, extra: str, table: str = "placement") -> MeshConfig:
    """examples/mesh.toml with ``extra`` lines added to its ``[table]`` (added if absent)."""
    (tmp_path / "prices.toml").write_text((EXAMPLES / "prices.toml").read_text())
    text = (EXAMPLES / "mesh.toml").read_text()
    head = f"[{table}]\n"
    text = text.replace(head, f"{head}{extra}\n") if head in text else f"{text}\n{head}{extra}\n"
    (tmp_path / "mesh.toml").write_text(text)
    return load_config(tmp_path / "mesh.toml")


def test_the_example_loads(tmp_path: pathlib.Path) -> None:
    _load(tmp_path, "")  # the base of the tests below is a valid file


@pytest.mark.parametrize("value", ["inf", "+inf", "nan"])
def test_a_backend_lease_of_inf_or_nan_is_refused_naming_the_key(
        tmp_path: pathlib.Path, value: str) -> None:
    """placement.stale_after_s is the backend lease: ``inf`` locked a restarted agent out of
    its own backends for good (it was accepted: ``gt=0`` floats allow inf)."""
    with pytest.raises(ConfigError) as got:
        _load(tmp_path, f"stale_after_s = {value}")
    assert "placement.stale_after_s" in str(got.value)
    assert "write a finite number" in str(got.value)


@pytest.mark.parametrize(("where", "key"), [
    (("placement",), "coalesce_ms"), (("edge",), "health_interval_s"),
    (("edge",), "report_interval_s"), (("edge",), "eject_base_s"), (("edge",), "drain_s"),
    (("models", 0), "default_slo_ms"), (("backends", 0), "speed"), (("rtt", 0), "ms"),
    (("consul",), "rate_refill_s"), (("consul",), "retry_max_s"),
])
def test_inf_is_refused_for_every_float_key(where: tuple[str | int, ...], key: str) -> None:
    raw = _raw()
    table: object = raw
    for part in where:
        if isinstance(part, str):
            assert isinstance(table, dict)
            table = table.setdefault(part, {})
        else:
            assert isinstance(table, list)
            table = table[part]
    assert isinstance(table, dict)
    table[key] = float("inf")
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*where, key))
    with pytest.raises(ValueError, match=re.escape(f"{name.lstrip('.')} = inf: write a "
                                                   "finite number")):
        MeshConfig.model_validate(raw)


@pytest.mark.parametrize("security", [
    {"plaintext": True, "limits": {"idle_connection_timeout_s": float("inf")}},
    {"plaintext": True, "tenants": [{"name": "a", "token": "x",
                                     "rate_limit_per_s": float("inf")}]},
])
def test_inf_is_refused_in_the_security_tables(security: dict[str, object]) -> None:
    raw = _raw()
    raw["security"] = security
    with pytest.raises(ValueError, match=r"security\.(limits|tenants\[0\])\.\w+ = inf"):
        MeshConfig.model_validate(raw)


@pytest.mark.parametrize("name", ["fast", "cheapest ", "Cheapest", ""])
def test_an_unknown_routing_profile_is_refused_naming_the_known_ones(
        tmp_path: pathlib.Path, name: str) -> None:
    """It used to load; the Python edge then raised KeyError on every call without an
    x-routing-profile hint (review11 finding 8)."""
    with pytest.raises(ConfigError) as got:
        _load(tmp_path, f"profile = {name!r}", table="routing")
    assert f"routing.profile {name!r} is not a routing profile" in str(got.value)
    assert f"write one of: {', '.join(PROFILES)}" in str(got.value)


@pytest.mark.parametrize("name", PROFILES)
def test_every_known_profile_loads_and_is_one_the_edge_builds(
        tmp_path: pathlib.Path, name: str) -> None:
    cfg = _load(tmp_path, f"profile = {name!r}", table="routing")
    assert cfg.routing.profile == name
    assert build_profile(name, cfg.routing.spread_band).name == name
