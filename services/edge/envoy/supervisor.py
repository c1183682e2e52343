"""One Envoy edge, kept serving: from placement over ADS, or from its snapshot while it is down.

At start, if no placement replica accepts connections and a snapshot exists, Envoy starts
from the snapshot (``snapshot.py``) and the supervisor probes placement; once a replica is
back, a second Envoy starts on the same port from the ADS bootstrap (listeners use
SO_REUSEPORT), and when its listener is active the first one drains its listeners and stops.
While Envoy runs on ADS, the supervisor saves a new snapshot whenever the active config
changes. ``python -m services.edge.envoy`` runs this for ``switchyard up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import threading
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog

from services.edge.envoy.bootstrap import EnvoyNode, EnvoyTls, bootstrap
from services.edge.envoy.launcher import EnvoyEdge, listening
from services.edge.envoy.snapshot import repoint_slow_path, static_bootstrap, write_atomically
from services.ports import free_port

log = structlog.get_logger("switchyard.edge.envoy")


class Supervisor:
    def __init__(self, node: EnvoyNode, placement: Sequence[str], directory: pathlib.Path,
                 concurrency: int | None = None, interval_s: float = 1.0,
                 certs: EnvoyTls | None = None) -> None:
        self.node = node
        self.certs = certs  # [security] TLS: the node's certificate files; None: plaintext
        self.placement = list(placement)
        self.directory = directory
        self.concurrency = concurrency
        self.interval_s = interval_s
        self.snapshot_path = directory / f"{node.edge_id}.snapshot.json"
        self.envoy: EnvoyEdge | None = None
        self.mode = ""  # "ads" or "snapshot"
        self._saved = ""
        self._seen_updates = ""  # the update counters of the config last dumped
        directory.mkdir(parents=True, exist_ok=True)

    def placement_reachable(self) -> bool:
        return any(listening(a.rpartition(":")[0], int(a.rpartition(":")[2]))
                   for a in self.placement)

    def _read_snapshot(self) -> dict[str, Any] | None:
        """The saved config, or None when it cannot be read as one (a crash or a full disk
        while it was written): it is moved aside, so the next start does not read it again,
        and the edge starts from its ADS bootstrap as with no snapshot."""
        try:
            saved = json.loads(self.snapshot_path.read_text())
            if isinstance(saved, dict) and isinstance(saved.get("static_resources"), dict):
                return saved
            why = "not an Envoy bootstrap with static_resources"
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            why = f"{type(exc).__name__}: {exc}"
        aside = self.snapshot_path.with_suffix(".unreadable")
        with contextlib.suppress(OSError):
            os.replace(self.snapshot_path, aside)
        log.warning("envoy_snapshot_unreadable", edge=self.node.edge_id,
                    snapshot=str(self.snapshot_path), moved_to=str(aside), error=why,
                    action="starts from its ADS bootstrap and waits for placement",
                    next_step="bring a placement replica up; the edge saves a new snapshot "
                              "once it has placement's config")
        return None

    def _start(self, mode: str, saved: dict[str, Any] | None = None) -> EnvoyEdge:
        node = replace(self.node, admin_port=free_port())
        config = bootstrap(node, self.placement, certs=self.certs)
        if mode == "snapshot" and saved is not None:
            config = {**saved, "admin": config["admin"]}
            repoint_slow_path(config, node.slow_path_port)
        path = self.directory / f"{node.edge_id}.{mode}.json"
        write_atomically(path, config)
        envoy = EnvoyEdge(node, path, self.concurrency)
        envoy.start()
        log.info("envoy_started", edge=node.edge_id, mode=mode, pid=envoy.pid,
                 admin_port=node.admin_port)
        return envoy

    def serving(self) -> bool:
        return self.envoy is not None and self.envoy.ready()

    def _updates(self) -> str:
        """Envoy's xDS update counters: unchanged, no config to dump again (a config dump
        costs Envoy and this process milliseconds of CPU; a stats read, microseconds)."""
        assert self.envoy is not None
        return self.envoy.admin("/stats?filter=update_success$")

    def save_snapshot(self) -> bool:
        """Write the active config as the snapshot when it changed; True if written."""
        assert self.envoy is not None
        try:
            updates = self._updates()
            if updates == self._seen_updates:
                return False
            dump = json.loads(self.envoy.admin("/config_dump"))
        except (OSError, urllib.error.URLError, ValueError):
            return False
        static = static_bootstrap(dump, bootstrap(self.envoy.node, self.placement,
                                                        certs=self.certs))
        if static is None:
            return False
        self._seen_updates = updates
        text = json.dumps(static, sort_keys=True)
        if text == self._saved:
            return False
        write_atomically(self.snapshot_path, static)
        self._saved = text
        return True

    def _hand_over(self, timeout_s: float = 30.0) -> None:
        """Placement is back: an ADS Envoy takes the port over from the snapshot one."""
        old, new = self.envoy, self._start("ads")
        deadline = time.monotonic() + timeout_s
        while not new.ready():
            if time.monotonic() > deadline:
                new.stop()
                log.warning("envoy_handover_failed", edge=self.node.edge_id,
                            action="keeps serving from the snapshot; retries")
                return
            time.sleep(0.05)
        if old is not None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                old.admin_post("/drain_listeners?graceful")
            time.sleep(1.0)  # Envoy's --drain-time-s: new connections go to the new Envoy
            old.stop()
        self.envoy, self.mode, self._seen_updates = new, "ads", ""
        log.info("envoy_handover", edge=self.node.edge_id, mode="ads")

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; stops its Envoy on the way out."""
        saved = (self._read_snapshot()
                 if self.snapshot_path.exists() and not self.placement_reachable() else None)
        self.mode = "snapshot" if saved is not None else "ads"
        self.envoy = self._start(self.mode, saved)
        try:
            while not stop.wait(self.interval_s):
                if self.mode == "ads":
                    self.save_snapshot()
                elif self.placement_reachable():
                    self._hand_over()
        finally:
            if self.envoy is not None:
                self.envoy.stop()
