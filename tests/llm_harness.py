"""LLM streams for integration tests: a raw-gRPC stream client that records tokens, initial
metadata and trailers; a direct call to a backend; killing and restarting the backend that
serves a stream, or slowing it down (the demo LLM's EMULATED speed × a factor, through its
repository's drill knob); the demo LLM's emulated speeds on a deployment, for bounds derived
from them instead of guessed; ``PlanLog``: each stream's choice as the in-process edge made it,
every deployment's prediction at that moment, for assertions on what the router knew rather
than on what a quiet host would show."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from placement.model import CallContext, Candidate
from placement.pipeline import Profile
from placement.streams import StreamChoice, StreamOption
from services.backends.repository import llm_parameters, set_control, variant_specs
from services.config import MeshConfig
from services.edge.generation import Generation
from services.edge.tokens import llm_request, parse_token
from tests.mesh_harness import Mesh, warm

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
PROMPT = list(range(100, 160))


class Stream:
    """One LLM stream's outcome as the caller saw it."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.initial: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.code: grpc.StatusCode | None = None
        self.details = ""
        # the caller's clock (time.perf_counter): call started, first token received
        self.started = 0.0
        self.first_at: float | None = None

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token as the caller saw it."""
        return None if self.first_at is None else (self.first_at - self.started) * 1000


def run_stream(address: str, prompt: list[int], max_tokens: int,
               metadata: list[tuple[str, str]],
               on_token: Callable[[int, Stream], None] | None = None) -> Stream:
    out = Stream()
    with grpc.insecure_channel(address) as ch:
        out.started = time.perf_counter()
        call = ch.stream_stream(STREAM)(iter([llm_request("generate", prompt, max_tokens)]),
                                        metadata=metadata, timeout=30)
        try:
            for resp in call:
                if out.first_at is None:
                    out.first_at = time.perf_counter()
                if not out.initial:
                    out.initial = dict(call.initial_metadata())
                token = parse_token(resp)
                assert token is not None, resp
                out.tokens.append(token)
                if on_token is not None:
                    on_token(len(out.tokens), out)
        except grpc.RpcError:
            pass
        out.code, out.details = call.code(), call.details() or ""
        out.trailers = dict(call.trailing_metadata() or ())
    return out


def direct(endpoint: str, variant: str, prompt: list[int], max_tokens: int) -> list[int]:
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.stream_stream(STREAM)(iter([llm_request(variant, prompt, max_tokens)]),
                                        timeout=30)
        return [t for r in call if (t := parse_token(r)) is not None]


@pytest.fixture
def killed(mesh: Mesh) -> Iterator[list[str]]:
    """Backends a test killed; restarted (and warmed, as the harness does) afterwards for the
    module's next tests."""
    names: list[str] = []
    yield names
    for name in names:
        proc = mesh.tritons[name]
        proc.stop(5)
        proc.start()
        proc.wait_ready(90)
        warm([proc.endpoint], ["summarize-small", "summarize-large"])  # fresh statistics


def kill_when(n: int, mesh: Mesh, killed: list[str]) -> Callable[[int, Stream], None]:
    def on_token(count: int, s: Stream) -> None:
        if count == n and not killed:
            backend = s.initial["x-served-by"].split("/")[0]
            killed.append(backend)
            mesh.tritons[backend].kill()
    return on_token


@pytest.fixture
def stopped(mesh: Mesh) -> Iterator[list[str]]:
    """Backends a test stopped with SIGSTOP; continued (SIGCONT) and ready again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        os.kill(mesh.tritons[name].pid, signal.SIGCONT)
        mesh.tritons[name].wait_ready(90)


def stop_when(n: int, mesh: Mesh, stopped: list[str]) -> Callable[[int, Stream], None]:
    """At the stream's ``n``-th token, the backend serving it stops (SIGSTOP): its
    connections stay open, it answers nothing."""
    def on_token(count: int, s: Stream) -> None:
        if count == n and not stopped:
            backend = s.initial["x-served-by"].split("/")[0]
            stopped.append(backend)
            os.kill(mesh.tritons[backend].pid, signal.SIGSTOP)
    return on_token


@pytest.fixture
def slowed(mesh: Mesh) -> Iterator[list[str]]:
    """Backends a test slowed down; back to their emulated speed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        set_control(mesh.tritons[name].repository, slow_factor=1.0)


def slow_when(n: int, mesh: Mesh, slowed: list[str], factor: float
              ) -> Callable[[int, Stream], None]:
    """At the stream's ``n``-th token, the backend serving it runs ``factor`` × slower (its
    demo LLM re-reads the knob within 200 ms)."""
    def on_token(count: int, s: Stream) -> None:
        if count == n and not slowed:
            backend = s.initial["x-served-by"].split("/")[0]
            slowed.append(backend)
            set_control(mesh.tritons[backend].repository, slow_factor=factor)
    return on_token


def emulated_ms(cfg: MeshConfig, deployment: str) -> dict[str, float]:
    """The demo LLM's EMULATED prefill and decode times on ``deployment`` (backend/variant),
    as its repository sets them (already divided by the backend's speed)."""
    backend_id, variant = deployment.split("/", 1)
    backend = next(b for b in cfg.backends if b.id == backend_id)
    (spec,) = [v for v in variant_specs(cfg, backend) if v.name == variant]
    return {k: float(str(v)) for k, v in llm_parameters(spec).items()
            if k.startswith(("llm_prefill", "llm_decode"))}


def cold_prefill_ms(ms: dict[str, float], prompt_tokens: int) -> float:
    """The emulated prefill of a prompt none of which is cached. It is a sleep, so a loaded
    host can only lengthen it: a first token sooner than this was served from the cache."""
    return ms["llm_prefill_base_ms"] + prompt_tokens * ms["llm_prefill_ms_per_token"]


@dataclass(frozen=True, slots=True)
class Planned:
    """One choice of an LLM stream's deployment by the edge (``Generation.plan``): the
    profile, the stream's prompt, the tokens it had delivered (0: its start, not a resume) and
    the choice with every deployment's prediction as the edge made it."""

    profile: str
    prompt: tuple[int, ...]
    delivered: int
    choice: StreamChoice

    @property
    def chosen(self) -> str:
        return self.choice.candidate.deployment_id

    def options(self, deployments: Sequence[str]) -> list[StreamOption]:
        return [o for o in self.choice.options if o.candidate.deployment_id in deployments]

    def said(self) -> str:
        """Every option's prediction, for an assertion's message."""
        return "; ".join(f"{o.candidate.deployment_id}: TTFT {o.ttft_ms:.1f} ms, TPOT "
                         f"{o.tpot_ms:.2f} ms, load {o.load}, feasible {o.feasible}"
                         for o in self.choice.options) + f" -> {self.chosen}"


@dataclass
class PlanLog:
    """Every ``Generation.plan`` of the in-process edge while the ``plans`` fixture is on,
    in the order they were made (the edge's own choice, recorded, not changed)."""

    plans: list[Planned] = field(default_factory=list)

    def starts(self, prompt: Sequence[int], fastest: bool) -> list[Planned]:
        """The plans that started (or, after a failure before its first token, restarted) the
        stream of ``prompt`` under the fastest profile or not."""
        key = tuple(prompt)
        return [p for p in self.plans if p.prompt == key and p.delivered == 0
                and (p.profile == "fastest") is fastest]


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> PlanLog:
    log = PlanLog()
    real = Generation.plan

    def plan(self: Generation, profile: Profile, cands: Sequence[Candidate],
             ctx: CallContext) -> StreamChoice:
        choice = real(self, profile, cands, ctx)
        if self.llm is not None:
            log.plans.append(Planned(profile.name, tuple(self.llm.prompt), len(self.delivered),
                                     choice))
        return choice

    monkeypatch.setattr(Generation, "plan", plan)
    return log
