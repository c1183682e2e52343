"""``[edge] engine = "envoy"``: validated, and `switchyard up` plans Envoy edges on the same ports."""

from __future__ import annotations

import pathlib

import pytest

from placement.errors import ConfigError
from services.config import load_config
from services.up import Mesh

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"


def _with_engine(tmp_path: pathlib.Path, engine: str) -> pathlib.Path:
    text = EXAMPLE.read_text().replace("[placement]", f'[edge]\nengine = "{engine}"\n\n[placement]')
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    (tmp_path / "prices.toml").write_text((EXAMPLE.parent / "prices.toml").read_text())
    return path


def test_envoy_edges_are_planned_on_the_configured_ports(tmp_path: pathlib.Path) -> None:
    path = _with_engine(tmp_path, "envoy")
    cfg = load_config(path)
    edges = [c for c in Mesh(cfg, str(path)).plan() if c.name.startswith("edge ")]
    assert [c.address for c in edges] == [f"{e.host}:{e.port}" for e in cfg.edges]
    assert all(c.kind == "envoy" and c.argv[1:3] == ["-m", "services.edge.envoy"]
               for c in edges)
    assert [c.argv[c.argv.index("--id") + 1] for c in edges] == [e.id for e in cfg.edges]


def test_the_python_edge_stays_the_default(tmp_path: pathlib.Path) -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.edge.engine == "python"
    edges = [c for c in Mesh(cfg, str(EXAMPLE)).plan() if c.name.startswith("edge ")]
    assert all(c.kind == "grpc" and c.argv[1:4] == ["-m", "services.cli", "edge"]
               for c in edges)


def test_an_unknown_engine_names_the_path(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"edge\.engine"):
        load_config(_with_engine(tmp_path, "nginx"))


def test_envoy_edges_refuse_the_part_of_security_they_cannot_honour(
        tmp_path: pathlib.Path) -> None:
    """Token tenants are carried (their calls take the slow path), and tenants identified by
    a client certificate's DNS or URI name (Envoy forwards it); one identified by an IP
    address is not (tests/unit/test_envoy_security.py has the rest)."""
    path = _with_engine(tmp_path, "envoy")
    tenants = ('\n[security]\nplaintext = true\n\n[[security.tenants]]\nname = "acme"\n'
               'token_sha256 = "' + "0" * 64 + '"\n')
    path.write_text(path.read_text() + tenants)
    assert load_config(path).security.tenants[0].name == "acme"
    base = path.read_text()
    path.write_text(base + 'client_san = "acme.tenant.local"\n')
    assert load_config(path).security.tenants[0].client_san == "acme.tenant.local"
    path.write_text(base + 'client_san = "10.1.2.3"\n')
    with pytest.raises(ConfigError, match=r"security\.tenants\[0\]\.client_san '10\.1\.2\.3'"):
        load_config(path)


def test_an_envoy_edges_retry_budget_is_the_configured_one(tmp_path: pathlib.Path) -> None:
    """``[edge] retry_budget_ratio`` held only Python edges: Envoy's was always 20 %."""
    from services.xds.server import envoy_settings

    path = _with_engine(tmp_path, "envoy")
    path.write_text(path.read_text().replace('engine = "envoy"',
                                             'engine = "envoy"\nretry_budget_ratio = 0.05'))
    assert envoy_settings(load_config(path)).retry_budget_percent == pytest.approx(5.0)
    assert envoy_settings(load_config(EXAMPLE)).retry_budget_percent == pytest.approx(20.0)
