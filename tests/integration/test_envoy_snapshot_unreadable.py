"""An Envoy edge whose saved snapshot cannot be read starts from its ADS bootstrap (review10,
finding 13). A crash or a full disk while the snapshot was written left a truncated file;
with placement down, ``Supervisor.run`` read it with ``json.loads`` and died with
``JSONDecodeError``: under ``switchyard up`` the edge crash-looped until placement came back.
Now the file is moved aside with a warning that says what to do, and a real Envoy starts
from the ADS bootstrap (it serves once a placement replica is up, as with no snapshot)."""

from __future__ import annotations

import pathlib
import threading
import urllib.error

import pytest
from structlog.testing import capture_logs

from services.edge.envoy.bootstrap import EnvoyNode
from services.edge.envoy.snapshot import write_atomically
from services.edge.envoy.supervisor import Supervisor
from services.ports import free_port
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration


def answers(sup: Supervisor) -> bool:
    """The supervisor's Envoy is up: its admin port answers /ready (LIVE with no listener
    yet: placement is down)."""
    if sup.envoy is None:
        return False
    try:
        sup.envoy.admin("/ready")
    except urllib.error.HTTPError:
        return True  # 503 while it waits for its first config: up, and answering
    except (OSError, urllib.error.URLError):
        return False
    return True


def supervisor(tmp_path: pathlib.Path) -> Supervisor:
    """An edge's supervisor whose placement is down (nothing listens at its address)."""
    node = EnvoyNode("edge-1", "r-east", "127.0.0.1", free_port(), 0)
    return Supervisor(node, [f"127.0.0.1:{free_port()}"], tmp_path, concurrency=1,
                      interval_s=0.05)


def started_mode(sup: Supervisor) -> str:
    """Run ``sup`` until its Envoy answers, stop it; the mode it started in."""
    stop = threading.Event()
    runner = threading.Thread(target=sup.run, args=(stop,))
    runner.start()
    try:
        eventually_sync(lambda: answers(sup), 20, "Envoy started and answers its admin port")
        return sup.mode
    finally:
        stop.set()
        runner.join(30)
        assert not runner.is_alive()


@pytest.mark.parametrize("text", ['{"static_resources": {"listeners": [', '[1, 2]', "\xff\xfe"])
def test_an_unreadable_snapshot_is_moved_aside_and_envoy_starts_from_ads(
        tmp_path: pathlib.Path, text: str) -> None:
    sup = supervisor(tmp_path)
    sup.snapshot_path.write_bytes(text.encode("latin-1"))
    with capture_logs() as logs:
        assert started_mode(sup) == "ads"
    assert not sup.snapshot_path.exists()
    assert sup.snapshot_path.with_suffix(".unreadable").read_bytes() == text.encode("latin-1")
    (warning,) = [e for e in logs if e["event"] == "envoy_snapshot_unreadable"]
    assert warning["log_level"] == "warning" and "placement" in warning["next_step"]


def test_a_readable_snapshot_is_still_what_envoy_starts_from(tmp_path: pathlib.Path) -> None:
    """The control: a whole snapshot with placement down is the snapshot mode (its config is
    exercised end to end by test_envoy_edge's restart test)."""
    sup = supervisor(tmp_path)
    write_atomically(sup.snapshot_path, {"static_resources": {"listeners": [], "clusters": []}})
    assert started_mode(sup) == "snapshot"
    assert sup.snapshot_path.exists()
    assert not sup.snapshot_path.with_suffix(".unreadable").exists()
