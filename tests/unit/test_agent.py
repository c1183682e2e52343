"""NodeAgent against a fake placement server (a real grpc.aio server on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random
from collections.abc import Awaitable, Callable

import pytest
import structlog.testing

from services.agent.agent import NodeAgent, backend_message
from services.agent.fake_nvml import FakeNvml
from services.agent.gpus import parse_gpus
from services.agent.simulated import Fault, SimulatedGpuSource
from services.agent.triton_stats import TritonSnapshot, model_stats, pending_requests
from services.api.switchyard.v1 import telemetry_pb2
from services.config import load_config
from tests.fake_placement import FakePlacement, serve_placement, wait_until

CONFIG = load_config(pathlib.Path(__file__).parents[2] / "examples" / "mesh.toml")
NO_GPU = FakeNvml(0, init_error=12)  # NVML_ERROR_LIBRARY_NOT_FOUND, as on this machine
NEVER = 3600.0


class FakeStats:
    """A Triton stand-in whose compute time grows by ``busy_ns`` per read."""

    def __init__(self, variants: list[str], busy_ns: int = 0) -> None:
        self.variants, self.busy_ns, self.total = variants, busy_ns, 0
        self.closed = False

    async def read(self) -> TritonSnapshot:
        self.total += self.busy_ns
        models = [telemetry_pb2.ModelStats(variant=v, ready=True, inference_count=3,
                                           compute_infer_ns=self.total) for v in self.variants]
        return TritonSnapshot(ready=True, models=models, inflight=1)

    async def close(self) -> None:
        self.closed = True


class Sleeps:
    """Records requested sleeps; really waits only a few ms so tests stay fast."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        if seconds >= NEVER:
            await asyncio.Event().wait()  # the NVML retry of tests that do not test it
        self.requested.append(seconds)
        await asyncio.sleep(0.005)  # the fake clock's stand-in for the requested sleep


def _agent(port: int, sleeps: Callable[[float], Awaitable[None]], **kw: object) -> NodeAgent:
    opts: dict[str, object] = {
        "placement": [f"127.0.0.1:{port}"], "nvml": NO_GPU, "sleep": sleeps,
        "stats_factory": lambda b: FakeStats(b.variants), "rng": random.Random(7),
        "agent_id": "agent-test", "nvml_retry_s": (NEVER, NEVER)}
    opts.update(kw)
    return NodeAgent(CONFIG, ["use1-h100", "use1-t4"], **opts)  # type: ignore[arg-type]


async def run_until(fake: FakePlacement, until: Callable[[NodeAgent], bool],
                    sleeps: Sleeps | None = None, **kw: object) -> NodeAgent:
    """Serve ``fake``, run an agent (``_agent`` with ``kw``) against it until ``until(agent)``
    holds, then stop both; the stopped agent, for what it holds."""
    server, port = await serve_placement(fake)
    agent = _agent(port, sleeps or Sleeps(), **kw)
    await agent.start()
    try:
        await wait_until(lambda: until(agent))
    finally:
        await agent.stop()
        await server.stop(None)
    return agent


def test_backend_message_carries_logical_models_and_cloud() -> None:
    b = next(b for b in CONFIG.backends if b.id == "use1-h100")
    msg = backend_message(CONFIG, b)
    assert (msg.id, msg.endpoint, msg.cloud, msg.region) == (
        "use1-h100", "127.0.0.1:8101", "aws", "aws-us-east-1")
    assert (msg.accelerator, msg.price_class, msg.max_concurrency) == (
        "nvidia-h100-80gb", "on-demand", 4)
    assert [(v.logical_model, v.variant, v.quality) for v in msg.variants] == [
        ("summarize", "summarize-small", 0.72), ("summarize", "summarize-large", 0.90),
        ("generate", "generate-large", 0.88)]


def test_unknown_backend_is_a_config_error() -> None:
    from placement.errors import ConfigError
    with pytest.raises(ConfigError, match="nope"):
        NodeAgent(CONFIG, ["nope"])


async def test_registers_and_streams_simulated_reports_at_interval() -> None:
    fake, sleeps = FakePlacement(), Sleeps()
    agent = await run_until(fake, lambda _: len(fake.reports) >= 6, sleeps, interval_s=1.0)
    assert sorted(r.backend.id for r in fake.registered) == ["use1-h100", "use1-t4"]
    assert agent.source == telemetry_pb2.TELEMETRY_SOURCE_SIMULATED
    assert {r.backend_id for r in fake.reports} == {"use1-h100", "use1-t4"}
    for r in fake.reports:
        assert r.source == telemetry_pb2.TELEMETRY_SOURCE_SIMULATED
        assert r.agent_id == "agent-test"
        assert r.backend_ready
        assert r.inflight == 1
        assert len(r.gpus) == 1
        assert r.gpus[0].uuid.startswith("GPU-simulated-")
    assert 1.0 in sleeps.requested  # the loop waits interval_s between rounds
    assert fake.streams == 1  # one stream carries every backend's reports
    # GPU index mapping: i-th backend on GPU i
    assert agent.gpus == {"use1-h100": [0], "use1-t4": [1]}


async def test_every_agent_log_line_says_simulated_without_nvml() -> None:
    fake = FakePlacement()
    with structlog.testing.capture_logs() as logs:
        await run_until(fake, lambda _: len(fake.reports) >= 2)
    agent_logs = [e for e in logs if e["event"].startswith("agent.")]
    assert agent_logs
    assert all(e["source"] == "simulated" for e in agent_logs)
    assert any(e["event"] == "agent.gpu_source_simulated" and e["log_level"] == "warning"
               for e in agent_logs)


async def test_nvml_source_reports_real_reader_fields_and_faults() -> None:
    nvml = FakeNvml(2)
    nvml.throttle(1)
    nvml.unsupported(0, "nvmlDeviceGetUtilizationRates")
    fake = FakePlacement()
    await run_until(fake, lambda _: len(fake.reports) >= 2, nvml=nvml,
                    gpus=parse_gpus("use1-t4=1"))
    by = {r.backend_id: r for r in fake.reports}
    assert by["use1-h100"].source == telemetry_pb2.TELEMETRY_SOURCE_NVML
    assert not by["use1-h100"].gpus[0].HasField("gpu_util_pct")
    assert by["use1-t4"].gpus[0].index == 1
    assert by["use1-t4"].gpus[0].throttle_reasons != 0


async def test_reconnects_and_reregisters_after_placement_restarts() -> None:
    first = FakePlacement()
    server, port = await serve_placement(first)
    sleeps = Sleeps()
    agent = _agent(port, sleeps, interval_s=0.02)
    await agent.start()
    try:
        await wait_until(lambda: len(first.reports) >= 2)
        await server.stop(None)
        await wait_until(lambda: agent.connected_to is None)
        await wait_until(lambda: len(sleeps.requested) > 8)  # it keeps trying while away
        second = FakePlacement()
        server, _ = await serve_placement(second, port)
        await wait_until(lambda: len(second.reports) >= 2)
    finally:
        await agent.stop()
        await server.stop(None)
    assert sorted(r.backend.id for r in second.registered) == ["use1-h100", "use1-t4"]
    assert agent.sessions == 2
    backoffs = [s for s in sleeps.requested if s != 0.02]
    assert backoffs
    assert max(backoffs) <= 5.0


async def test_tries_replicas_in_turn() -> None:
    fake = FakePlacement()
    server, port = await serve_placement(fake)
    dead = await serve_placement(FakePlacement())
    await dead[0].stop(None)  # a replica that is down
    agent = _agent(port, Sleeps(), placement=[f"127.0.0.1:{dead[1]}", f"127.0.0.1:{port}"])
    await agent.start()
    try:
        await wait_until(lambda: len(fake.reports) >= 2)
        assert agent.connected_to == f"127.0.0.1:{port}"
    finally:
        await agent.stop()
        await server.stop(None)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    agent = _agent(1, Sleeps(), rng=random.Random(1))
    delays = [agent._backoff(n) for n in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(2.5 <= d <= 5.0 for d in delays[8:])


def test_simulated_utilisation_follows_triton_compute_time() -> None:
    now = [100.0]
    sim = SimulatedGpuSource(clock=lambda: now[0])

    def read(busy_ns: int) -> telemetry_pb2.GpuReading:
        m = telemetry_pb2.ModelStats(variant="summarize-small", compute_infer_ns=busy_ns)
        return sim.read("b", 0, "nvidia-l4", 1, ["summarize-small"], [m])

    assert read(0).gpu_util_pct == 0.0
    now[0] += 1.0
    r = read(500_000_000)  # 0.5 s busy in 1 s of wall time
    assert r.gpu_util_pct == pytest.approx(50.0)
    assert 16 < r.power_w < 72
    assert r.sm_clock_mhz == r.sm_clock_max_mhz
    assert r.mem_used_bytes == 4 * 1024**3  # 1 GiB base + one 3 GiB variant
    assert r.name == "NVIDIA L4"


def test_simulated_faults_by_method_and_control_file(tmp_path: pathlib.Path) -> None:
    control = tmp_path / "faults.json"
    sim = SimulatedGpuSource(control_file=control)

    def read(backend: str) -> telemetry_pb2.GpuReading:
        return sim.read(backend, 0, "nvidia-t4", 1, [], [])

    sim.inject("a", Fault.THROTTLING, Fault.ECC, Fault.XID)
    r = read("a")
    assert r.sm_clock_mhz < r.sm_clock_max_mhz
    assert r.throttle_reasons & 0x20
    assert r.ecc_uncorrected_volatile == 2
    assert list(r.xid_events) == [79]
    assert list(read("a").xid_events) == []  # an XID is reported once
    sim.clear("a")
    assert read("a").throttle_reasons == 0
    control.write_text(json.dumps({"b": ["lost"], "c": ["memory_full"]}))
    assert read("b").lost
    c = read("c")
    assert c.mem_free_bytes / c.mem_total_bytes < 0.03
    control.unlink()
    assert not read("b").lost


def test_model_stats_conversion_and_pending_metric() -> None:
    from tritonclient.grpc import service_pb2 as triton

    resp = triton.ModelStatisticsResponse(model_stats=[
        triton.ModelStatistics(name="summarize-small", version="1", inference_count=10,
                               execution_count=4, inference_stats=triton.InferStatistics(
                                   success=triton.StatisticDuration(count=10, ns=9),
                                   fail=triton.StatisticDuration(count=1, ns=1),
                                   queue=triton.StatisticDuration(count=10, ns=100),
                                   compute_infer=triton.StatisticDuration(count=4, ns=800))),
        triton.ModelStatistics(name="other", inference_count=99)])
    stats = model_stats(resp, {"summarize-small": True, "summarize-large": False})
    small, large = stats
    assert (small.variant, small.inference_count, small.execution_count) == (
        "summarize-small", 10, 4)
    assert (small.success_count, small.failure_count, small.queue_ns,
            small.compute_infer_ns, small.ready) == (10, 1, 100, 800, True)
    assert (large.variant, large.inference_count, large.ready) == ("summarize-large", 0, False)
    text = ('# TYPE nv_inference_pending_request_count gauge\n'
            'nv_inference_pending_request_count{model="summarize-small",version="1"} 3\n'
            'nv_inference_pending_request_count{model="other",version="1"} 7\n')
    assert pending_requests(text, ["summarize-small"]) == 3


async def test_triton_reader_returns_not_ready_when_triton_is_down() -> None:
    from services.agent.triton_stats import TritonStatsReader

    server, port = await serve_placement(FakePlacement())  # a port with no Triton service behind it
    reader = TritonStatsReader(f"127.0.0.1:{port}", ["summarize-small"], timeout_s=0.5)
    snap = await reader.read()
    await reader.close()
    await server.stop(None)
    assert not snap.ready
    assert snap.error


# -- one read per interval, NVML off the loop, late NVML, --gpus (issue 10, section 4) ------


def _xids(fake: FakePlacement, backend: str) -> list[int]:
    return [x for r in fake.reports if r.backend_id == backend for g in r.gpus
            for x in g.xid_events]


async def test_an_xid_reaches_every_placement_replica() -> None:
    nvml = FakeNvml(1)
    replicas = [FakePlacement(), FakePlacement()]
    servers = [await serve_placement(f) for f in replicas]
    agent = _agent(0, Sleeps(), nvml=nvml, fan_out=True, interval_s=0.05,
                   placement=[f"127.0.0.1:{port}" for _, port in servers])
    await agent.start()
    try:
        await wait_until(lambda: all(len(f.reports) >= 2 for f in replicas))
        nvml.xid(0, 79)
        await wait_until(lambda: all(_xids(f, "use1-h100") for f in replicas))
    finally:
        await agent.stop()
        for server, _ in servers:
            await server.stop(None)
    # one read per round: both replicas got the very same event, once each per backend
    assert [_xids(f, "use1-h100") for f in replicas] == [[79], [79]]
    assert [_xids(f, "use1-t4") for f in replicas] == [[79], [79]]  # both run on GPU 0


def test_a_mailbox_folds_the_xids_of_rounds_it_never_sent() -> None:
    from services.agent.agent import Mailbox

    def round_(xids: list[int]) -> list[telemetry_pb2.TelemetryReport]:
        return [telemetry_pb2.TelemetryReport(backend_id="b", gpus=[
            telemetry_pb2.GpuReading(index=0, xid_events=xids)])]

    box = Mailbox()
    box.put(round_([79]))
    newest = round_([])
    box.put(newest)
    (got,) = asyncio.run(box.get())
    assert list(got.gpus[0].xid_events) == [79]
    assert list(newest[0].gpus[0].xid_events) == []  # the shared round is not modified


async def test_nvml_is_read_on_its_own_thread_not_the_event_loop() -> None:
    import threading

    nvml = FakeNvml(1)
    fake = FakePlacement()
    await run_until(fake, lambda _: len(fake.reports) >= 4, nvml=nvml)
    assert nvml.threads
    assert threading.current_thread().name not in nvml.threads
    assert all(t.startswith("nvml") for t in nvml.threads)


async def test_nvml_that_comes_up_late_replaces_simulated_readings() -> None:
    nvml = FakeNvml(2)
    nvml.fail_init(2)  # the driver is still loading when the agent starts
    fake = FakePlacement()
    server, port = await serve_placement(fake)
    sleeps = Sleeps()
    agent = _agent(port, sleeps, nvml=nvml, nvml_retry_s=(0.25, 60.0))
    with structlog.testing.capture_logs() as logs:
        await agent.start()
        try:
            assert agent.source == telemetry_pb2.TELEMETRY_SOURCE_SIMULATED
            await wait_until(lambda: any(r.source == telemetry_pb2.TELEMETRY_SOURCE_NVML
                                         for r in fake.reports))
        finally:
            await agent.stop()
            await server.stop(None)
    assert agent.source == telemetry_pb2.TELEMETRY_SOURCE_NVML
    assert {0.25, 0.5} <= set(sleeps.requested)  # backoff: 0.25 s, then twice that
    switched = [e for e in logs if e["event"] == "agent.gpu_source_switched"]
    assert switched and switched[0]["source"] == "nvml" and switched[0]["was"] == "simulated"
    assert switched[0]["attempts"] == 3
    nvml_reports = [r for r in fake.reports if r.source == telemetry_pb2.TELEMETRY_SOURCE_NVML]
    last = [r for r in nvml_reports if r.backend_id == "use1-h100"][-1]
    assert last.gpus[0].uuid == nvml.gpus[0].uuid
    assert agent.gpus == {"use1-h100": [0], "use1-t4": [1]}


async def test_gpus_chosen_by_uuid_and_pool() -> None:
    nvml = FakeNvml(3)
    fake = FakePlacement()
    agent = await run_until(fake, lambda _: len(fake.reports) >= 2, nvml=nvml,
                            gpus=parse_gpus(f"2,use1-t4={nvml.gpus[1].uuid.lower()}"))
    assert agent.gpus == {"use1-h100": [2], "use1-t4": [1]}
    by = {r.backend_id: r for r in fake.reports}
    assert by["use1-t4"].gpus[0].uuid == nvml.gpus[1].uuid


@pytest.mark.parametrize(("spec", "message"), [
    ("7", "GPU 7 does not exist"),
    ("GPU-nope", "no GPU has UUID 'GPU-nope'"),
    ("other=0", "does not run"),
])
async def test_gpus_that_this_host_does_not_have_stop_the_agent(spec: str, message: str) -> None:
    from placement.errors import ConfigError

    agent = _agent(1, Sleeps(), nvml=FakeNvml(2), gpus=parse_gpus(spec))
    with pytest.raises(ConfigError, match=message):
        await agent.start()
    await agent.stop()


@pytest.mark.parametrize("spec", ["zero", "a=", "=0", "a=0+x"])
def test_gpus_flag_syntax_errors(spec: str) -> None:
    from placement.errors import ConfigError

    with pytest.raises(ConfigError, match="--gpus"):
        parse_gpus(spec)


def test_switchyard_agent_takes_the_agents_own_flags() -> None:
    from services.cli import parser

    args = parser().parse_args(["agent", "--backends", "use1-t4", "--gpus", "0,GPU-abc",
                                "--one-replica"])
    assert (args.gpus, args.backends, args.one_replica) == ("0,GPU-abc", "use1-t4", True)
    assert args.fn.__name__ == "cmd_agent"


async def test_a_round_that_fails_to_read_is_skipped_not_fatal() -> None:
    class Flaky(FakeStats):
        async def read(self) -> TritonSnapshot:
            self.total += 1
            if self.total == 2:
                raise RuntimeError("boom")
            return await super().read()

    with structlog.testing.capture_logs() as logs:
        await run_until(FakePlacement(), lambda agent: agent.rounds >= 4,
                        stats_factory=lambda b: Flaky(b.variants))
    assert any(e["event"] == "agent.read_failed" for e in logs)


async def test_replicas_looked_up_again_get_sessions_and_leavers_lose_theirs() -> None:
    a, b = FakePlacement(), FakePlacement()
    (sa, pa), (sb, pb) = await serve_placement(a), await serve_placement(b)
    catalog = [f"127.0.0.1:{pa}"]

    async def lookup() -> list[str]:
        return list(catalog)

    agent = _agent(pa, Sleeps(), fan_out=True, replicas=lookup, replicas_every_s=0.5,
                   placement=list(catalog))
    await agent.start()
    try:
        await wait_until(lambda: len(a.reports) >= 2)
        catalog[:] = [f"127.0.0.1:{pb}"]  # replica A's pod restarted as B
        await wait_until(lambda: len(b.reports) >= 2)
        await wait_until(lambda: agent.replicas == [f"127.0.0.1:{pb}"])
        seen_by_a = len(a.reports)
        await wait_until(lambda: len(b.reports) >= seen_by_a + 6)
        assert len(a.reports) <= seen_by_a + 2  # at most the round in flight
        catalog[:] = []  # Consul has no answer: keep what we have
        await wait_until(lambda: agent.rounds >= 20)
        assert agent.replicas == [f"127.0.0.1:{pb}"]
    finally:
        await agent.stop()
        await sa.stop(None)
        await sb.stop(None)
    assert sorted(r.backend.id for r in b.registered) == ["use1-h100", "use1-t4"]
