"""``python -m services.edge.envoy``: an operator's mistake is one line and exit 2, no traceback."""

from __future__ import annotations

import pathlib

import pytest

from services.edge.envoy.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_missing_config_is_named_with_what_to_do(tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert main(["--config", str(missing), "--id", "edge-us-east"]) == 2
    err = capsys.readouterr().err
    assert f"config file {missing} does not exist; pass --config PATH" in err
    assert "Traceback" not in err


def test_an_id_the_config_has_no_edge_for_lists_the_edges(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(ROOT / "examples" / "mesh.toml"), "--id", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--id 'nope' is not an edge of the config ['edge-us-east', 'edge-eu-west']" in err
    assert "Traceback" not in err
