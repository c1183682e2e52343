"""``switchyard agent`` with a config that does not load: exit 2, the reason in one plain line
for the operator (beside the JSON log line for the log pipeline), no traceback."""

from __future__ import annotations

import pathlib

import pytest

from services import logs
from services.agent.cli import main


def test_a_missing_config_is_said_in_a_plain_line(tmp_path: pathlib.Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # main configures process-wide logging: not in tests (later ones read its events)
    monkeypatch.setattr(logs, "configure", lambda *_a, **_k: None)
    missing = tmp_path / "absent.toml"
    assert main(["--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert (f"switchyard agent: config file {missing} does not exist; pass --config PATH"
            in err.splitlines())
    assert "Traceback" not in err
