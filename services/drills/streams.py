"""The mid-stream kill drill (issue 14): concurrent resumable LLM streams through an edge,
SIGKILL of the backend serving most of them mid-generation, and a count of what callers lost.

``run_stream_drill`` starts ``streams`` LLM streams at once (the demo LLM's contract:
``services.edge.tokens.llm_request``, a distinct prompt and ``x-session-id`` each), finds the
backend that the most of them are on (their ``x-served-by`` initial metadata), waits until
each of its streams has delivered ``kill_after`` tokens, kills it (``kill``) and waits for
all to end.
Each stream is then compared with the generation its variant produces without a fault
(``reference``: the demo LLM is deterministic per variant, so any surviving backend serving
it gives the same tokens):

- **lost**: the stream did not end OK with every token it asked for;
- **missing** tokens: in the reference but not in the stream; **duplicated** tokens: in the
  stream more often than in the reference (both counted as multisets, over all streams);
- **reordered**: the right tokens in the wrong order.

The drill passes when the kill hit at least one stream, every check holds and all four
counts are 0. It is bounded: streams carry a deadline of ``timeout_s``.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import grpc

from services.edge.tokens import llm_request, parse_token
from services.render import table

if TYPE_CHECKING:
    from services.up import Mesh

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
KILL_STREAMS = "kill-streams"  # its name for `switchyard drill`
Reference = Callable[[str, list[int], int, str], list[int]]  # variant, prompt, n, avoid backend


@dataclass
class StreamRun:
    """One stream as its caller saw it."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    first_served_by: str = ""  # initial metadata: where it started
    served_by: str = ""  # trailers: where it ended
    resumed: int = 0
    code: str = ""
    details: str = ""
    done: bool = False
    done_at: float = 0.0  # time.monotonic() when it ended


def run_one(address: str, model: str, s: StreamRun, max_tokens: int,
            metadata: Sequence[tuple[str, str]], timeout_s: float) -> None:
    """One stream through the edge, recorded into ``s`` as it goes (the drill watches)."""
    with grpc.insecure_channel(address) as ch:
        rpc: grpc.StreamStreamMultiCallable[bytes, bytes] = ch.stream_stream(
            STREAM, request_serializer=None, response_deserializer=None)
        call = rpc(iter([llm_request(model, s.prompt, max_tokens)]), metadata=tuple(metadata),
                   timeout=timeout_s)
        try:
            for resp in call:
                if not s.first_served_by:
                    s.first_served_by = _text(call.initial_metadata()).get("x-served-by", "?")
                token = parse_token(resp)
                if token is not None:
                    s.tokens.append(token)
        except grpc.RpcError:
            pass
        s.code, s.details = call.code().name, call.details() or ""
        tr = _text(call.trailing_metadata())
    s.served_by, s.resumed = tr.get("x-served-by", ""), int(tr.get("x-resumed", "0") or 0)
    s.done_at, s.done = time.monotonic(), True


def _text(md: object) -> dict[str, str]:
    pairs: Sequence[tuple[str, str | bytes]] = md or ()  # type: ignore[assignment]
    return {k: v if isinstance(v, str) else v.decode() for k, v in pairs}


def token_errors(expected: Sequence[int], got: Sequence[int]) -> tuple[int, int, bool]:
    """(missing, duplicated, reordered) of ``got`` against ``expected`` (see the docstring)."""
    want, have = Counter(expected), Counter(got)
    missing = sum((want - have).values())
    duplicated = sum((have - want).values())
    return missing, duplicated, not missing and not duplicated and list(got) != list(expected)


@dataclass
class StreamDrillReport:
    streams: int
    max_tokens: int
    kill_after_tokens: int
    killed: str
    on_killed: int  # streams the killed backend was serving
    lost: int
    missing_tokens: int
    duplicated_tokens: int
    reordered: int
    resumed: int  # resumptions over all streams (x-resumed)
    seconds: float
    checks: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # up to 3 "STATUS: details"
    # per stream: (started on, ended on, x-resumed, tokens, status)
    per_stream: list[tuple[str, str, int, int, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values()) and not (
            self.lost or self.missing_tokens or self.duplicated_tokens or self.reordered)

    def table(self) -> str:
        rows = [["streams", str(self.streams)],
                ["tokens asked per stream", str(self.max_tokens)],
                ["killed (SIGKILL)", f"{self.killed} after each of its streams had "
                                     f"≥{self.kill_after_tokens} tokens"],
                ["streams on the killed backend", str(self.on_killed)],
                ["streams resumed (x-resumed)", str(self.resumed)],
                ["streams lost", str(self.lost)],
                ["tokens missing", str(self.missing_tokens)],
                ["tokens duplicated", str(self.duplicated_tokens)],
                ["streams reordered", str(self.reordered)],
                ["wall time", f"{self.seconds:.1f} s"]]
        rows += [[f"check: {k}", "ok" if v else "FAILED"] for k, v in self.checks.items()]
        rows += [["failure", f] for f in self.failures]
        verdict = "PASSED" if self.passed else "FAILED"
        return f"drill kill-streams: {verdict}\n" + table(["measured", "value"], rows)

    def to_dict(self) -> dict[str, object]:
        return {"scenario": "kill-streams", "passed": self.passed, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def run_stream_drill(edge_address: str, model: str, kill: Callable[[str], None],
                     reference: Reference, *, streams: int = 8, max_tokens: int = 120,
                     kill_after: int = 20, prompt_tokens: int = 40, seed: int = 0,
                     timeout_s: float = 30.0,
                     progress: Callable[[str], None] = lambda _m: None) -> StreamDrillReport:
    """Run the drill (see the module docstring); ``kill(backend_id)`` breaks the backend."""
    rng = random.Random(seed)
    runs = [StreamRun([rng.randrange(1, 30_000) for _ in range(prompt_tokens)])
            for _ in range(streams)]
    t0 = time.monotonic()
    threads = [threading.Thread(target=run_one, daemon=True, args=(
        edge_address, model, s, max_tokens, [("x-session-id", f"drill-{seed}-{i}")],
        timeout_s)) for i, s in enumerate(runs)]
    for t in threads:
        t.start()
    deadline = t0 + timeout_s / 2

    def wait(ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline and not ready():
            time.sleep(0.005)

    wait(lambda: all(s.first_served_by or s.done for s in runs))  # where each one is
    counts = Counter(s.first_served_by.split("/", 1)[0] for s in runs if s.first_served_by)
    killed = counts.most_common(1)[0][0] if counts else ""
    on_killed = counts.get(killed, 0)
    target = [s for s in runs if killed and s.first_served_by.startswith(killed + "/")]
    wait(lambda: all(len(s.tokens) >= kill_after or s.done for s in target))
    killed_at = math.inf
    if killed:
        progress(f"SIGKILL {killed}: serving {on_killed} of {streams} streams, "
                 f"{min(len(s.tokens) for s in target)}+ tokens delivered each")
        kill(killed)
        killed_at = time.monotonic()
    for t in threads:
        t.join(timeout_s + 5)
    seconds = time.monotonic() - t0
    lost = missing = duplicated = reordered = 0
    failures: list[str] = []
    for s in runs:
        if s.code != "OK" or len(s.tokens) != max_tokens:
            lost += 1
            if len(failures) < 3:
                failures.append(f"{s.code or 'unfinished'}: {s.details[:160]} "
                                f"({len(s.tokens)} tokens)")
        variant = (s.first_served_by or s.served_by or "/").split("/", 1)[1]
        if not variant:
            missing += max_tokens
            continue
        m, d, r = token_errors(reference(variant, s.prompt, max_tokens, killed), s.tokens)
        missing, duplicated, reordered = missing + m, duplicated + d, reordered + r
    checks = {
        "the kill hit at least one stream": on_killed > 0,
        # else the kill came too late to test anything (a loaded host can delay it)
        "every stream on the killed backend was still running after the kill": all(
            s.done_at > killed_at for s in runs if s.first_served_by.startswith(killed + "/")),
        "every stream on the killed backend resumed elsewhere": all(
            s.resumed >= 1 and not s.served_by.startswith(killed + "/")
            for s in runs if s.first_served_by.startswith(killed + "/")) if killed else False,
    }
    return StreamDrillReport(streams, max_tokens, kill_after, killed, on_killed, lost,
                             missing, duplicated, reordered, sum(s.resumed for s in runs),
                             round(seconds, 2), checks, failures,
                             [(s.first_served_by, s.served_by, s.resumed, len(s.tokens), s.code)
                              for s in runs])


def drill_mesh(mesh: Mesh, *, streams: int = 8, max_tokens: int = 200, kill_after: int = 20,
               settle_timeout_s: float = 60.0,
               progress: Callable[[str], None] = lambda _m: None) -> StreamDrillReport:
    """``switchyard drill kill-streams``: the drill on a running mesh (``services.up``) through
    its first edge; the killed tritonserver is restarted and the mesh settled afterwards."""
    from services.drills.mesh import DrillError, MeshHandle

    h = MeshHandle(mesh)
    cfg = h.cfg
    model = next((m.name for m in cfg.models if m.decoupled), None)
    if model is None or not cfg.edges:
        raise DrillError("kill-streams needs a decoupled (LLM) model and an edge")
    problems = h.settle(settle_timeout_s, lambda p: progress(f"waiting for a healthy mesh: {p}"))
    if problems:
        raise DrillError(f"mesh not healthy before the drill: {problems}")
    edge = cfg.edges[0]
    serving = {b.id: (b.endpoint, set(b.variants)) for b in cfg.backends}

    def reference(variant: str, prompt: list[int], n: int, avoid: str) -> list[int]:
        endpoint = next((ep for b, (ep, vs) in serving.items() if b != avoid and variant in vs),
                        None)
        if endpoint is None:
            raise DrillError(f"no backend but {avoid} serves {variant}: nothing to resume on")
        run = StreamRun(prompt)
        run_one(endpoint, variant, run, n, (), 30.0)
        return run.tokens

    progress(f"drill kill-streams: {streams} streams of {model!r} x {max_tokens} tokens "
             f"through {edge.id}; SIGKILL of the busiest backend mid-generation")
    killed: list[str] = []

    def kill(backend: str) -> None:
        killed.append(backend)
        h.kill_backend(backend)

    try:
        report = run_stream_drill(f"{edge.host}:{edge.port}", model, kill, reference,
                                  streams=streams, max_tokens=max_tokens,
                                  kill_after=kill_after, progress=progress)
    finally:
        for b in killed:
            progress(f"restarting {b} (fresh tritonserver)")
            h.restart(h.backend_child(b))
    problems = h.settle(settle_timeout_s)
    if problems:
        report.failures.append(f"mesh did not settle after the drill: {problems}")
    return report
