"""The metrics audit's tools (``tests/integration/test_metrics_truth.py``): an edge run as
the operator runs it, ``python -m services.cli edge`` with its /metrics on a real port and its
stderr in a file; Prometheus text as series; each call as its caller saw it (``Seen``, kept
by request id in ``CALLERS`` for the log's check); the edge's counts against those calls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pathlib
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import tritonclient.grpc as tc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.ports import free_port
from tests.mesh_harness import (
    Mesh,
    eventually,
    mesh_config,
    raw_infer,
    request_bytes,
    summarize_input,
)

EDGE = "edge-metered"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # str, int, float, bool: TOML spells them as JSON does


def toml_of(raw: dict[str, Any]) -> str:
    """``raw`` (a MeshConfig dump) as a TOML file: scalars, then tables, then arrays of
    tables, each table's values inline."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items()
             if not isinstance(v, dict | list) or (isinstance(v, list) and not
                                                   (v and isinstance(v[0], dict)))]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{kk} = {_toml_value(x)}" for kk, x in v.items())]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines += [f"[[{k}]]", *(f"{kk} = {_toml_value(x)}" for kk, x in item.items())]
    return "\n".join(lines) + "\n"


@dataclass
class Edge:
    proc: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log: pathlib.Path
    config: pathlib.Path

    def series(self) -> Series:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as resp:
            return parse(resp.read().decode())

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def parse(text: str) -> Series:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("switchyard_")}


def placement_series(mesh: Mesh) -> Series:
    return parse(generate_latest(mesh.placement.service.metrics.registry).decode())


def pick(series: Series, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in series.items()
               if n == name and labels.items() <= dict(ls).items())


def edge_fixtures(name: str) -> tuple[Any, Any]:
    """A test module's ``cfg`` (``mesh_config`` in a directory called ``name``) and ``edge``
    (``edge_process`` on the module's mesh) fixtures, module-scoped:
    ``cfg, edge = edge_fixtures("metrics_truth")``."""

    @pytest.fixture(scope="module")
    def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
        return mesh_config(tmp_path_factory.mktemp(name))

    @pytest.fixture(scope="module")
    def edge(mesh: Mesh, cfg: MeshConfig, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Edge]:
        with edge_process(mesh, cfg, tmp_path_factory.mktemp("edge_process")) as e:
            yield e

    return cfg, edge


@contextlib.contextmanager
def stopped(triton: TritonProcess) -> Iterator[None]:
    """``triton`` stopped (SIGSTOP: its connections stay open and nothing answers) for the
    block, continued (SIGCONT) after it, whatever the block raised."""
    triton.kill(signal.SIGSTOP)
    try:
        yield
    finally:
        triton.kill(signal.SIGCONT)


@contextlib.contextmanager
def edge_process(mesh: Mesh, cfg: MeshConfig, tmp: pathlib.Path) -> Iterator[Edge]:
    """``switchyard edge`` for a second r-east edge, on ``mesh``'s placement; killed on exit
    unless a test stopped it."""
    raw = cfg.model_dump(mode="json", exclude_defaults=True)
    port, mport = free_port(), free_port()
    raw["edges"] = [*raw["edges"], {"id": EDGE, "region": "r-east", "port": port,
                                    "metrics_port": mport}]
    path = tmp / "mesh.toml"
    path.write_text(toml_of(raw))
    assert MeshConfig.model_validate(tomllib.loads(path.read_text())).edges[-1].id == EDGE
    log = tmp / "edge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "edge", "--config", str(path), "--id", EDGE,
             "--placement", f"127.0.0.1:{mesh.placement.port}"], stdout=out, stderr=out)
    try:
        yield Edge(proc, f"127.0.0.1:{port}", mport, log, path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def ready(edge: Edge) -> None:
    def serving() -> bool:
        assert edge.proc.poll() is None, edge.log.read_text()[-3000:]
        try:
            with tc.InferenceServerClient(edge.address) as c:
                return bool(c.is_model_ready("summarize") and c.is_model_ready("generate"))
        except Exception:
            return False

    await eventually(lambda: asyncio.to_thread(serving), 40, "the edge process serves",
                     poll_s=0.2)


# -- what the callers saw ----------------------------------------------------------------

CALLERS: dict[str, Seen] = {}  # every call with trailers, by request id: the logs' truth


@dataclass
class Seen:
    """One call as its caller saw it; kept in ``CALLERS`` by request id when it has one."""

    model: str  # the metric's model label: the model, or "unknown"
    status: str
    trailers: dict[str, str]

    def __post_init__(self) -> None:
        if "x-request-id" in self.trailers:
            CALLERS[self.trailers["x-request-id"]] = self

    @property
    def attempts(self) -> int:
        return int(self.trailers.get("x-attempts", "0"))


async def unary(ch: grpc.aio.Channel, md: Sequence[tuple[str, str]] = (),
                raw: bytes | None = None, model: str = "summarize",
                timeout: float | None = 5.0) -> Seen:
    code, trailers, _ = await raw_infer(ch, md, raw, timeout)
    return Seen(model, code.name, trailers)


def served(address: str, md: Sequence[tuple[str, str]]) -> Seen:
    with tc.InferenceServerClient(address) as c:
        _, trailers = infer_with_trailers(c, "summarize", [summarize_input()], md, 5.0)
    return Seen("summarize", "OK", trailers)


async def stream(ch: grpc.aio.Channel, second: bytes | None = None, cancel_after: int = 0,
                 timeout: float = 10) -> Seen:
    """A generate stream (4 responses); ``second``: a further request sent once the first
    response came; ``cancel_after``: the caller cancels after that many responses."""
    requests: asyncio.Queue[bytes | None] = asyncio.Queue()
    requests.put_nowait(request_bytes("generate"))

    async def gen() -> AsyncIterator[bytes]:
        while (r := await requests.get()) is not None:
            yield r

    call: Any = ch.stream_stream(STREAM)(gen(), metadata=(("x-slo-ms", "5000"),),  # type: ignore[arg-type]
                                         timeout=timeout)
    n = 0
    try:
        async for _ in call:
            n += 1
            if n == 1:
                requests.put_nowait(second)  # None: the caller is done writing
            if n == cancel_after:
                # what the edge sent with the first response: its attempts so far
                head = _strs(await call.initial_metadata())
                call.cancel()
                return Seen("generate", "CANCELLED", head)
    except grpc.aio.AioRpcError as err:
        return Seen("generate", err.code().name, _strs(err.trailing_metadata()))
    finally:
        requests.put_nowait(None)  # the request iterator ends either way
    trailers = _strs(await call.trailing_metadata())
    assert n == 4 and trailers["x-tokens-out"] == "4", (n, trailers)  # tokens as delivered
    return Seen("generate", (await call.code()).name, trailers)


def _strs(md: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (md or ())}


def check_calls(series: Series, seen: Sequence[Seen]) -> None:
    """Every call counted once under its status, served calls under their deployment, each
    call's latency observed once and its attempts summed (``x-attempts``)."""
    by = collections.Counter((s.model, s.status) for s in seen)
    got: collections.Counter[tuple[str, str]] = collections.Counter()
    for (name, ls), v in series.items():
        if name == "switchyard_edge_calls_total" and v:
            d = dict(ls)
            got[(d["model"], d["status"])] += int(v)
    assert got == by, (got, by)
    ok = collections.Counter((s.model, s.trailers["x-served-by"]) for s in seen
                             if s.status == "OK" and "x-served-by" in s.trailers)
    for (model, dep), n in ok.items():
        assert pick(series, "switchyard_edge_calls_total", model=model, deployment=dep,
                    status="OK") == n, (model, dep, n)
    for model in {s.model for s in seen}:
        calls = sum(1 for s in seen if s.model == model)
        assert pick(series, "switchyard_edge_call_seconds_count", model=model) == calls, model
        attempts = sum(s.attempts for s in seen if s.model == model)
        assert pick(series, "switchyard_edge_attempts_total", model=model) == attempts, model


def delta(after: Series, before: Series) -> Series:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}

