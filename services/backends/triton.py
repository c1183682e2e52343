"""A real ``tritonserver`` process (the binary the nvidia-pytriton wheel ships) on one repository.

PyTriton's own callback path is bypassed on purpose: running the bundled binary directly on a
model repository with Triton's Python backend is ~3x faster per call and loads a model in
about a second (see DESIGN.md). What the binary needs, found on this machine:

- ``LD_LIBRARY_PATH`` with ``site-packages/nvidia_pytriton.libs`` (libcudart, even on CPU);
- a ``--backend-directory`` whose ``python/`` holds ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the ``triton_python_backend_stub`` built for this
  Python (``python_backend_stubs/3.11``); it is assembled inside the run directory;
- ``PATH`` starting with the virtualenv's ``bin`` so the stub finds the venv's numpy.

Everything binds 127.0.0.1: gRPC (the data plane) and Prometheus metrics (scraped by the
agent); HTTP is off. ``PYTRITON_HOME`` points inside the run directory.

The Python backend keeps each model instance's shared memory in
``/dev/shm/<prefix><uuid>``; a server that is killed leaves them behind (1,039 were found
after one session). Each start gets its own prefix (``--backend-config=python,
shm-region-prefix-name=``), so :meth:`TritonProcess.stop` removes exactly the files of the
servers it ran, once they are dead, and nobody else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import sysconfig
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO

import structlog

from placement.errors import SwitchyardError
from services.backends.repository import write_repository
from services.backends.shm import remove_shm, shm_prefix_for
from services.config import BackendConfig, MeshConfig
from services.ports import free_port

log = structlog.get_logger()


class BackendStartError(SwitchyardError):
    """Triton did not come up (bad install, model failed to load, not ready in time)."""

    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside the installed nvidia-pytriton wheel."""

    binary: pathlib.Path
    libs: pathlib.Path
    python_backend: pathlib.Path
    stub: pathlib.Path

    @classmethod
    def locate(cls) -> TritonInstall:
        """Find the wheel next to this interpreter; raise with what is missing."""
        site = pathlib.Path(sysconfig.get_paths()["purelib"])
        root = site / "pytriton" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            libs=site / "nvidia_pytriton.libs",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        )
        for path in (install.binary, install.libs, install.python_backend, install.stub):
            if not path.exists():
                raise BackendStartError(f"nvidia-pytriton install incomplete: {path} is missing")
        return install


def prepare_backend_directory(run_dir: pathlib.Path, install: TritonInstall) -> pathlib.Path:
    """Assemble ``<run_dir>/triton-backends/python`` (symlinks) and return its parent."""
    backends = run_dir / "triton-backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    links = {
        "libtriton_python.so": install.python_backend / "libtriton_python.so",
        "triton_python_backend_utils.py": install.python_backend
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": install.stub,
    }
    for name, target in links.items():
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return backends


def triton_environment(
    run_dir: pathlib.Path, install: TritonInstall, base: dict[str, str]
) -> dict[str, str]:
    """The environment tritonserver and its Python stubs need, on top of ``base``."""
    env = dict(base)
    venv_bin = str(pathlib.Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PYTRITON_HOME"] = str(run_dir / "pytriton")
    # One BLAS thread per stub: each backend stands for one accelerator; keeps timings sane.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def triton_command(
    install: TritonInstall,
    repository: pathlib.Path,
    backend_dir: pathlib.Path,
    *,
    host: str,
    grpc_port: int,
    metrics_port: int,
    model_control: str = "none",
    load_models: Sequence[str] = (),
    shm_prefix: str = "",
) -> list[str]:
    """The tritonserver argument list: gRPC + metrics on ``host``, HTTP off.

    ``model_control="explicit"`` starts with only ``load_models`` loaded; the rest of the
    repository is loaded and unloaded through Triton's repository API (issue 13).
    ``shm_prefix``: the Python backend's shared-memory file names start with it.
    """
    explicit = (["--model-control-mode=explicit", *(f"--load-model={m}" for m in load_models)]
                if model_control == "explicit" else [])
    return [
        str(install.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backend_dir}",
        "--allow-http=false",
        "--allow-grpc=true",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        "--exit-on-error=true",
        # Explicit control: the server is ready when it answers, whatever it is loading.
        # Strict readiness would answer ServerReady "not ready" for the whole of every load
        # (seconds) and after an unload, and the edges' health checks would block the
        # variants it already serves (issue 13); which variants take calls is placement's.
        f"--strict-readiness={'false' if model_control == 'explicit' else 'true'}",
        "--log-verbose=0",
        "--exit-timeout-secs=5",
        *([f"--backend-config=python,shm-region-prefix-name={shm_prefix}"]
          if shm_prefix else []),
        *explicit,
    ]


class TritonProcess:
    """One tritonserver child process on a model repository, with readiness and kill switches.

    ``grpc_port``/``metrics_port`` of 0 are resolved to free ports at construction, so
    ``endpoint`` and ``metrics_url`` are known before ``start()``. Logs go to
    ``<run_dir>/tritonserver.log``.
    """

    def __init__(
        self,
        repository: str | os.PathLike[str],
        run_dir: str | os.PathLike[str],
        models: Sequence[str],
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        metrics_port: int = 0,
        env: dict[str, str] | None = None,
        name: str = "triton",
        model_control: str = "none",
    ) -> None:
        self.repository = pathlib.Path(repository).resolve()
        self.run_dir = pathlib.Path(run_dir).resolve()
        self.models = list(models)
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.name = name
        self.model_control = model_control  # "explicit": only ``models`` load at start
        self.log_path = self.run_dir / "tritonserver.log"
        self._env = dict(os.environ) if env is None else env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.shm_prefix = shm_prefix_for(name)  # a new one per start
        self._dead_prefixes: list[str] = []  # of servers this object ran that are gone

    @classmethod
    def for_backend(
        cls,
        cfg: MeshConfig,
        backend: BackendConfig,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        instances: int = 1,
        load: Sequence[str] | None = None,
    ) -> TritonProcess:
        """Write ``backend``'s repository under ``run_dir`` (default: :func:`backend_run_dir`).

        ``load`` given: explicit model control, only those variants loaded at start.
        """
        base = pathlib.Path(run_dir) if run_dir else backend_run_dir(cfg, backend)
        specs = write_repository(cfg, backend, base / "repo", instances=instances)
        return cls(
            base / "repo",
            base,
            [s.name for s in specs] if load is None else list(load),
            host=backend.host,
            grpc_port=backend.grpc_port,
            metrics_port=backend.metrics_port,
            name=backend.id,
            model_control="none" if load is None else "explicit",
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BackendStartError(f"{self.name}: tritonserver not started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def command(self) -> tuple[list[str], dict[str, str]]:
        """Prepare the backend directory; return (argv, env) to run tritonserver."""
        install = TritonInstall.locate()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        backend_dir = prepare_backend_directory(self.run_dir, install)
        argv = triton_command(
            install,
            self.repository,
            backend_dir,
            host=self.host,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            model_control=self.model_control,
            load_models=self.models,
            shm_prefix=self.shm_prefix,
        )
        return argv, triton_environment(self.run_dir, install, self._env)

    def start(self) -> None:
        """Spawn tritonserver (its own session, so a drill's signal hits only it)."""
        if self.alive:
            return
        if self._proc is not None:  # a previous server of ours died (a drill's kill)
            self._dead_prefixes.append(self.shm_prefix)
            self.remove_shm()
            self.shm_prefix = shm_prefix_for(self.name)
        argv, env = self.command()
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.write_endpoints(self._proc.pid)
        log.info("triton.start", backend=self.name, pid=self._proc.pid, endpoint=self.endpoint,
                 metrics=self.metrics_url, models=self.models)

    def write_endpoints(self, pid: int) -> pathlib.Path:
        """Record pid, gRPC endpoint and metrics URL in ``<run_dir>/endpoints.json``.

        Ports configured as 0 are only known once chosen; agents and drills read them here.
        """
        path = self.run_dir / "endpoints.json"
        path.write_text(json.dumps({"backend": self.name, "pid": pid, "endpoint": self.endpoint,
                                    "metrics_url": self.metrics_url, "models": self.models}))
        return path

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the server and every model report ready; raise with the log tail."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.endpoint)
        try:
            while True:
                if not self.alive:
                    raise BackendStartError(
                        f"{self.name}: tritonserver exited with {self.returncode}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(InferenceServerException):
                    if client.is_server_ready(client_timeout=1.0) and all(
                        client.is_model_ready(m, client_timeout=1.0) for m in self.models
                    ):
                        log.info("triton.ready", backend=self.name, endpoint=self.endpoint)
                        return
                if time.monotonic() > deadline:
                    raise BackendStartError(
                        f"{self.name}: not ready after {timeout_s}s:\n" + self.log_tail()
                    )
                time.sleep(0.1)
        finally:
            client.close()

    async def wait_ready_async(self, timeout_s: float = 60.0) -> None:
        """:meth:`wait_ready` off the event loop."""
        await asyncio.to_thread(self.wait_ready, timeout_s)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to tritonserver itself (drills: SIGKILL = the process dies mid-call)."""
        if self.alive:
            assert self._proc is not None
            log.info("triton.signal", backend=self.name, pid=self._proc.pid, signal=sig)
            self._proc.send_signal(sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL; also reap the Python stubs."""
        self.begin_stop()
        return self.finish_stop(time.monotonic() + grace)

    def begin_stop(self) -> None:
        """SIGTERM tritonserver if it runs; :meth:`finish_stop` waits for it (see
        :func:`stop_all`: several servers shut down together, not one after another)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def finish_stop(self, deadline: float) -> int | None:
        """Wait until ``deadline`` (``time.monotonic()``) for the exit :meth:`begin_stop`
        asked for, then SIGKILL; kill what is left of its process group (the stubs) and
        remove the dead server's shared memory. An idle server exits ~3 s after SIGTERM
        (its Python-backend models unload in ~2 s, and Triton checks for live models once a
        second), so a short grace ends an idle server with SIGKILL: nothing is lost, the
        stubs die with the group and the files are removed by prefix."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # Stubs share tritonserver's session; clean up any a hard kill left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._dead_prefixes.append(self.shm_prefix)
        self.remove_shm()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        log.info("triton.stopped", backend=self.name, returncode=proc.returncode)
        return proc.returncode

    def remove_shm(self) -> list[pathlib.Path]:
        """Remove the shared-memory files of this object's servers that are gone (a killed
        one leaves them); returns what was removed."""
        removed = [p for prefix in self._dead_prefixes for p in remove_shm(prefix)]
        self._dead_prefixes.clear()
        if removed:
            log.info("triton.shm_removed", backend=self.name, files=len(removed))
        return removed

    async def stop_async(self, grace: float = 10.0) -> int | None:
        """:meth:`stop` off the event loop."""
        return await asyncio.to_thread(self.stop, grace)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(procs: Iterable[TritonProcess], grace: float = 10.0) -> list[int | None]:
    """Stop several servers together: SIGTERM to all, then one shared ``grace`` for all of
    them before SIGKILL (stopping three idle servers takes one server's ~3 s, not 9 s).
    Return codes in the order given."""
    procs = list(procs)
    for p in procs:
        p.begin_stop()
    deadline = time.monotonic() + grace
    return [p.finish_stop(deadline) for p in procs]


def backend_run_dir(cfg: MeshConfig, backend: BackendConfig) -> pathlib.Path:
    """Where a backend's repository, logs and PyTriton home live: ``<run_dir>/backends/<id>``."""
    return cfg.path(cfg.run_dir) / "backends" / backend.id


def exec_backend(cfg: MeshConfig, backend: BackendConfig, *, instances: int = 1) -> None:
    """Write the repository and replace this process with tritonserver (pid = the server).

    Used by ``switchyard up`` and by drills that SIGKILL the real process. Logs go to this
    process's stdout/stderr. A configured port of 0 is resolved to a free port first.
    """
    proc = TritonProcess.for_backend(cfg, backend, instances=instances)
    # One prefix per run directory: the supervisor restarts a backend only once its previous
    # process is dead, so what that one left (killed by a drill, say) is removed here.
    proc.shm_prefix = shm_prefix_for(backend.id, f"{zlib.crc32(str(proc.run_dir).encode()):08x}")
    left = remove_shm(proc.shm_prefix)
    argv, env = proc.command()
    proc.write_endpoints(os.getpid())  # exec keeps the pid
    log.info("triton.exec", backend=backend.id, endpoint=proc.endpoint,
             metrics=proc.metrics_url, models=proc.models, shm_removed=len(left))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exec, not spawn: the caller's pid must be the real server so drills can SIGKILL it.
    os.execve(argv[0], argv, env)  # noqa: S606 - our own binary, argv list, no shell
