"""``[agent] metrics_port``: `switchyard up` starts its node agent with a /metrics listener,
and preflight checks the port like every other server's."""

from __future__ import annotations

import pathlib

from services.cli_preflight import listen_ports
from services.config import load_config
from services.up import Mesh

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"


def _agent_argv(path: pathlib.Path) -> list[str]:
    cfg = load_config(path)
    (agent,) = [c for c in Mesh(cfg, str(path)).plan() if c.kind == "agent"]
    return agent.argv


def test_the_embedded_mesh_serves_the_agents_metrics() -> None:
    argv = _agent_argv(EXAMPLE)
    cfg = load_config(EXAMPLE)
    assert cfg.agent.metrics_port != 0
    port = argv[argv.index("--metrics-port") + 1]
    assert port == str(cfg.agent.metrics_port)
    assert argv[argv.index("--metrics-host") + 1] == "127.0.0.1"
    assert ("agent.metrics_port", "127.0.0.1", cfg.agent.metrics_port) in listen_ports(cfg)


def test_without_an_agent_section_no_metrics_listener(tmp_path: pathlib.Path) -> None:
    text = EXAMPLE.read_text()
    start = text.index("[agent]")
    end = text.index("\n\n", start)
    path = tmp_path / "mesh.toml"
    path.write_text(text[:start] + text[end + 2:])
    (tmp_path / "prices.toml").write_text((EXAMPLE.parent / "prices.toml").read_text())
    assert "--metrics-port" not in _agent_argv(path)
    assert not [k for k, _, _ in listen_ports(load_config(path)) if k.startswith("agent.")]
