"""The processes the data-plane benchmark measures: one Triton, placement, edges, nginx.

Everything listens on 127.0.0.1 on free ports and lives in one temp directory. Edges and
placement run as separate ``python -m services.cli`` processes, so their CPU can be read
from ``/proc``; nginx (Debian's, installed on first use) runs in the foreground with a
generated config. :class:`Fleet` is a context manager that stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import children_pids, progress
from services.ports import free_port

REGION, CLOUD, ACCEL = "aws-us-east-1", "aws", "nvidia-t4"
MODEL, VARIANT = "tiny", "tiny-v1"  # different names: the edge rewrites field 1, as in prod

PRICES = f"""
[[prices]]
accelerator = "{ACCEL}"
cloud = "{CLOUD}"
region = "{REGION}"
price_class = "on-demand"
usd_per_gpu_hour = 0.526
"""


def mesh_toml(triton_port: int, placement_port: int, edges: dict[str, int],
              uvloop: bool, run_dir: pathlib.Path) -> str:
    """A one-region mesh: one tiny-compute model on one Triton, the given edges."""
    edge_tables = "".join(
        f'\n[[edges]]\nid = "{eid}"\nregion = "{REGION}"\nport = {port}\n'
        for eid, port in edges.items())
    return f"""
prices_file = "prices.toml"
run_dir = "{run_dir}"

[[regions]]
name = "{REGION}"
cloud = "{CLOUD}"

[[models]]
name = "{MODEL}"
default_slo_ms = 1000
variants = [{{ name = "{VARIANT}", quality = 0.8, matmul_n = 8, matmul_iters = 1 }}]

[[backends]]
id = "bench-t4"
region = "{REGION}"
accelerator = "{ACCEL}"
grpc_port = {triton_port}
max_concurrency = 64
variants = ["{VARIANT}"]
{edge_tables}
[placement]
port = {placement_port}

[edge]
uvloop = {"true" if uvloop else "false"}

[wan]
emulate = false
"""


def ensure_nginx() -> str:
    """Path of an nginx with the http2 module; apt-get installs nginx-light if missing."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                     else None)
    if path is None:
        progress("nginx not found: apt-get install -y nginx-light")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        path = shutil.which("nginx") or "/usr/sbin/nginx"
    info = subprocess.run([path, "-V"], capture_output=True, text=True).stderr
    if "http_v2_module" not in info:
        raise RuntimeError(f"{path} lacks --with-http_v2_module (needed for grpc_pass):\n{info}")
    return path


def nginx_version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stderr.strip()
    return out.split("/", 1)[-1] if "/" in out else out


def nginx_conf(tmp: pathlib.Path, port: int, upstream: str, workers: int) -> str:
    t = tmp.as_posix()
    return f"""
daemon off;
master_process on;
worker_processes {workers};
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {t}/body;
  proxy_temp_path {t}/proxy;
  fastcgi_temp_path {t}/fastcgi;
  uwsgi_temp_path {t}/uwsgi;
  scgi_temp_path {t}/scgi;
  upstream triton {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} http2;
    http2_max_concurrent_streams 1024;
    location / {{ grpc_pass grpc://triton; }}
  }}
}}
"""


@dataclass
class Target:
    """Something the load generator calls: an address, a model name, the pids to bill."""

    name: str
    address: str
    model: str
    proxy_pids: list[int] = field(default_factory=list)
    uses_children: bool = False  # bill the pids' children (nginx workers), not the pids
    admin_port: int = 0  # an Envoy's admin (benchmarks.envoy_stats), else 0

    def pids(self) -> list[int]:
        if not self.uses_children:
            return list(self.proxy_pids)
        return [c for p in self.proxy_pids for c in children_pids(p)] + self.proxy_pids


class Fleet:
    """Start and stop the benchmark's processes; everything is torn down on exit."""

    def __init__(self) -> None:
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.triton = None  # TritonProcess
        self.triton_address = ""
        self.placement_address = ""
        self.placement_pid = 0

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self, name: str, edges: dict[str, int], uvloop: bool = True) -> pathlib.Path:
        tport = int(self.triton_address.rsplit(":", 1)[1]) if self.triton_address else 0
        pport = int(self.placement_address.rsplit(":", 1)[1]) if self.placement_address else 0
        path = self.tmp / f"{name}.toml"
        path.write_text(mesh_toml(tport, pport, edges, uvloop, self.tmp / "run"))
        return path

    def start_triton(self, instances: int = 1) -> str:
        from services.backends.triton import TritonProcess
        from services.config import load_config

        (self.tmp / "prices.toml").write_text(PRICES)
        self.triton_address = f"127.0.0.1:{free_port()}"
        self.placement_address = f"127.0.0.1:{free_port()}"
        cfg = load_config(self.config("base", {}))
        proc = TritonProcess.for_backend(cfg, cfg.backends[0], self.tmp / "triton",
                                         instances=instances)
        proc.start()
        self.triton = proc
        proc.wait_ready(120)
        return self.triton_address

    def _spawn(self, argv: list[str], log: str,
               cwd: pathlib.Path | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                 cwd=cwd or os.getcwd(), start_new_session=True)
        self.procs.append(p)
        return p

    def start_envoy(self, name: str, bootstrap: dict[str, Any], log_level: str = "warning"
                    ) -> subprocess.Popen[bytes]:
        """One Envoy worker from ``bootstrap`` (written to ``<tmp>/<name>.json``), logging to
        ``<tmp>/<name>.log``; the caller waits for what it needs (a port, a model)."""
        from services.edge.envoy.launcher import envoy_command

        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(bootstrap))
        return self._spawn(envoy_command(path, concurrency=1, log_level=log_level),
                           f"{name}.log")

    def start_placement(self) -> None:
        cfg = self.config("placement", {"unused-edge": free_port()})
        self.placement_pid = self._spawn(
            [sys.executable, "-m", "services.cli", "--log-level", "warning", "placement",
             "--config", str(cfg)], "placement.log").pid
        _wait_port(self.placement_address, 30)

    def start_edges(self, name: str, workers: int = 1, uvloop: bool = True,
                    log_level: str = "info", source: pathlib.Path | None = None) -> Target:
        """``workers`` edge processes on one port (SO_REUSEPORT), ready to route; with
        ``source`` (an export of another commit) that tree's edge (``python -m`` there)."""
        port = free_port()
        cfg = self.config(name, {name: port}, uvloop)
        pids = []
        for i in range(workers):
            p = self._spawn([sys.executable, "-m", "services.cli", "--log-level", log_level,
                             "edge", "--config", str(cfg), "--id", name],
                            f"{name}-{i}.log", cwd=source)
            pids.append(p.pid)
            time.sleep(0.3)  # let the first bind; the rest join its SO_REUSEPORT group
        address = f"127.0.0.1:{port}"
        _wait_model_ready(address, MODEL, 60, self.tmp / f"{name}-0.log")
        return Target(name, address, MODEL, pids)

    def start_passthrough(self, name: str) -> Target:
        """The bare grpc.aio byte-passthrough (benchmarks/_passthrough.py), one process."""
        port = free_port()
        p = self._spawn([sys.executable, "-m", "benchmarks._passthrough", str(port),
                         self.triton_address], f"{name}.log")
        address = f"127.0.0.1:{port}"
        _wait_port(address, 30)
        _wait_infer(address, VARIANT, 30, self.tmp / f"{name}.log")
        return Target(name, address, VARIANT, [p.pid])

    def start_nginx(self, name: str, workers: int = 1) -> Target:
        binary = ensure_nginx()
        d = self.tmp / name
        d.mkdir()
        port = free_port()
        (d / "nginx.conf").write_text(nginx_conf(d, port, self.triton_address, workers))
        p = self._spawn([binary, "-p", str(d), "-c", str(d / "nginx.conf")], f"{name}.log")
        address = f"127.0.0.1:{port}"
        _wait_model_ready(address, VARIANT, 30, d / "nginx-error.log")
        return Target(name, address, VARIANT, [p.pid], uses_children=True)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()
        if self.triton is not None:
            self.triton.stop(grace=5)
            self.triton = None
        if not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def _wait_port(address: str, timeout: float) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {address} after {timeout}s")


def _wait_infer(address: str, model: str, timeout: float, log: pathlib.Path) -> None:
    _wait_model_ready(address, model, timeout, log, check_ready=False)


def _wait_model_ready(address: str, model: str, timeout: float, log: pathlib.Path,
                      check_ready: bool = True) -> None:
    """Poll ModelReady (unless ``check_ready`` is off) and one inference until both succeed."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.ones((1, 16), np.float32))
    last = ""
    try:
        while time.monotonic() < deadline:
            try:
                if not check_ready or client.is_model_ready(model, client_timeout=1.0):
                    client.infer(model, [inp], client_timeout=5.0)
                    return
            except InferenceServerException as exc:
                last = str(exc)
            time.sleep(0.2)
    finally:
        client.close()
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{model} not ready at {address} after {timeout}s ({last}):\n{tail}")
