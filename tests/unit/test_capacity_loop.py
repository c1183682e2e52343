"""The capacity loop in placement, with a fake provider and fake model control: demand from
observed call rates → plan → approval → act through the placement gate → audit events; and
what a failed load or a provider error leaves behind (an audit event, nothing silent)."""

from __future__ import annotations

import pathlib
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from placement.errors import ConfigError
from placement.fleet import VariantLoad
from placement.forecast import ClassKey
from placement.model import Candidate
from services.api.switchyard.v1.telemetry_pb2 import ModelStats
from services.capacity.actor import ApplyFailed, CapacityActor
from services.capacity.model_control import DrainReport, RoutingGate
from services.capacity.provider import Instance
from services.config import MeshConfig, load_config
from services.placement.capacity import CapacityLoop, NotPending
from services.placement.capacity_footprint import FootprintBook, GpuFull, MemoryReading
from services.placement.capacity_gate import PlacementGate, PoolSite
from services.placement.capacity_service import plan_pools, plan_response
from services.placement.capacity_telemetry import InstanceTelemetry
from services.placement.main import build_service
from services.placement.server import PlacementService
from services.security.authz import AuthzPolicy
from tests.unit.test_capacity_actor import FakeProvider

PRICES = """
[[prices]]
accelerator = "gpu-cheap"
cloud = "aws"
region = "*"
price_class = "on-demand"
usd_per_gpu_hour = 0.5
source = "test fixture"
"""

MESH = """
prices_file = "prices.toml"
regions = [{ name = "r-east", cloud = "aws" }]
backends = []
[[models]]
name = "summarize"
default_slo_ms = 300
variants = [{ name = "small", quality = 0.7 }, { name = "large", quality = 0.9 }]
[capacity]
enabled = true
apply = "approve"
survive_region_loss = false
forecast_every_s = 5  # the forecast fed every observation: the tests step the clock by 5 s
[[capacity.pools]]
id = "east"
region = "r-east"
accelerator = "gpu-cheap"
variants = ["small", "large"]
gpu_memory_gb = 16
max_gpus = 2
[[capacity.variants]]
name = "small"
memory_gb = 6
compute_ms = 20
[[capacity.variants]]
name = "large"
memory_gb = 12
compute_ms = 40
"""


class FakeControl:
    """A server's loaded set; ``fail_load`` names variants whose load Triton refuses."""

    def __init__(self, inst: Instance, servers: dict[str, set[str]],
                 fail_load: set[str]) -> None:
        self.inst = inst
        self.models = servers.setdefault(inst.id, set())
        self.fail_load = fail_load

    async def loaded(self) -> frozenset[str]:
        return frozenset(self.models)

    async def load(self, variant: str) -> None:
        if variant in self.fail_load:
            raise RuntimeError(f"failed to load '{variant}': out of memory")
        self.models.add(variant)

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        await gate.stop(self.inst, variant)
        self.models.discard(variant)
        return DrainReport(variant, 0.0, 0)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def config(tmp_path: pathlib.Path, extra: str = "") -> MeshConfig:
    (tmp_path / "prices.toml").write_text(PRICES)
    (tmp_path / "mesh.toml").write_text(MESH + extra)
    return load_config(tmp_path / "mesh.toml")


class Rig:
    def __init__(self, tmp_path: pathlib.Path, fail_load: set[str] | None = None,
                 **capacity: Any) -> None:
        """``capacity``: ``[capacity]`` settings over the file's."""
        cfg = config(tmp_path)
        self.cfg = cfg.model_copy(update={"capacity": cfg.capacity.model_copy(update=capacity)})
        self.service: PlacementService = build_service(self.cfg, preregister=False)
        self.clock = Clock()
        pools = plan_pools(self.cfg, self.service)
        sites = {p: PoolSite("aws", "r-east", "gpu-cheap", "on-demand", 4) for p in pools}
        self.gate = PlacementGate(self.service.fleet, self.service.hub,
                                  self.service.builder.catalog, sites, settle_s=0.0)
        self.provider = FakeProvider([])
        self.servers: dict[str, set[str]] = {}
        self.fail_load = fail_load or set()
        self.actor = CapacityActor(self.provider, self.gate,
                                   lambda i: FakeControl(i, self.servers, self.fail_load))
        self.book = FootprintBook({v.name: v.memory_gb for v in self.cfg.capacity.variants})
        self.loop = CapacityLoop(self.cfg.capacity, self.service.builder.catalog,
                                 self.service.fleet, pools, self.actor, self.book,
                                 lambda _: None,
                                 wall=lambda: 3600.0 * 24 * 100 + self.clock.t,
                                 monotonic=self.clock)

    def calls(self, deployment: str, rate: float) -> None:
        """An edge reports ``rate`` calls/s to ``deployment`` (as ReportObservations does)."""
        self.service.fleet.observe_use("r-east", "edge-1", deployment, rate, self.clock.t)

    def shift(self) -> list[str]:
        """A minute later (the small class's reports stale), four observations 5 s apart
        of calls to the quality variant; the re-plans they made due."""
        self.clock.t += 60
        dues = []
        for _ in range(4):
            self.clock.t += 5
            self.calls("east-1/large", 5.0)
            due = self.loop.observe()
            dues += [due.reason] if due is not None else []
        return dues

    def routed(self) -> dict[str, list[str]]:
        return {b: [v.name for v in s.backend.variants]
                for b, s in self.service.fleet.backends.items()}


AUDIT = {"capacity.proposed", "capacity.approved", "capacity.changed", "capacity.applied",
         "capacity.apply_failed", "capacity.infeasible"}  # on the switchyard.audit logger


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if e["event"] in AUDIT]


async def test_observed_demand_plans_waits_for_approval_then_acts_and_audits(
        tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with capture_logs() as logs:
        proposal = await rig.loop.replan("test")
    assert proposal is not None and proposal.decision.adopt
    assert rig.loop.state.pending  # apply = "approve": nothing happened yet
    assert rig.provider.instances("east") == []
    assert proposal.decision.plan.loaded() == {"east": frozenset({"small"})}
    resp = plan_response(rig.loop)
    assert resp.pending and resp.plan_id == proposal.id
    (need,) = resp.needs
    assert need.demand_class == "summarize/q>=0.7/300ms/r-east"
    assert need.rate_rps == pytest.approx(3.0 * 1.1)  # the forecast's peak factor
    assert need.served_by == [f"east via small: {need.rate_rps:.2f}/s"]
    assert [e for e in events(logs) if e == "capacity.proposed"]

    with pytest.raises(NotPending):
        await rig.loop.approve("not-the-plan", "admin")
    with capture_logs() as logs:
        actions = await rig.loop.approve(proposal.id, "admin")
    assert actions == [("add", "east-1", ""), ("load", "east-1", "small")]
    assert rig.routed() == {"east-1": ["small"]}  # in the route tables only once loaded
    assert events(logs) == ["capacity.approved", "capacity.changed", "capacity.changed",
                            "capacity.applied"]
    changed = [e for e in logs if e["event"] == "capacity.changed"]
    assert [(e["action"], e["variant"], e["approved_by"]) for e in changed] == [
        ("add", "", "admin"), ("load", "small", "admin")]
    assert not rig.loop.state.pending
    with pytest.raises(NotPending):  # applied plans are not pending any more
        await rig.loop.approve(proposal.id, "admin")
    assert plan_response(rig.loop).current.pools[0].instances == ["east-1"]

    # Demand shifts to the quality-0.9 class; the small class goes quiet: the forecast is
    # surprised, the plan follows the observations, the idle variant is drained and unloaded.
    dues = rig.shift()
    assert dues[0] == "new demand class: summarize/q>=0.9/300ms/r-east"
    assert dues[-1].startswith("forecast error: summarize/q>=0.7/300ms/r-east: observed 0.00")
    assert [x.key.min_quality for x in rig.loop.forecaster.surprises()] == [0.7]  # went quiet
    second = await rig.loop.replan("shift")
    assert second is not None and second.decision.adopt
    assert second.decision.plan.loaded() == {"east": frozenset({"large"})}
    with capture_logs() as logs:
        actions = await rig.loop.approve(second.id, "admin")
    # the better variant first, then the idle one drained (out of the tables) and unloaded
    assert actions == [("load", "east-1", "large"), ("unload", "east-1", "small")]
    assert rig.routed() == {"east-1": ["large"]}
    assert rig.servers["east-1"] == {"large"}


async def test_a_failed_load_is_audited_and_nothing_after_it_runs(tmp_path: pathlib.Path
                                                                  ) -> None:
    rig = Rig(tmp_path)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    first = await rig.loop.replan("test")
    assert first is not None
    await rig.loop.approve(first.id, "admin")
    rig.fail_load.add("large")
    rig.shift()
    second = await rig.loop.replan("shift")
    assert second is not None
    with capture_logs() as logs, pytest.raises(ApplyFailed) as err:
        await rig.loop.approve(second.id, "admin")
    assert err.value.step == ("load", "east-1", "large")
    (failed,) = [e for e in logs if e["event"] == "capacity.apply_failed"]
    assert failed["log_level"] == "error"
    assert failed["step"] == ["load", "east-1", "large"]
    assert "out of memory" in failed["error"]
    assert failed["applied"] == []
    # small was not drained after the failed load: the old placement still serves
    assert rig.servers["east-1"] == {"small"}
    assert rig.routed() == {"east-1": ["small"]}
    resp = plan_response(rig.loop)
    assert "load east-1 large failed" in resp.last_error
    assert [p.variants for p in resp.current.pools] == [["small"]]


async def test_a_provider_error_is_audited_with_the_steps_before_it(tmp_path: pathlib.Path
                                                                    ) -> None:
    rig = Rig(tmp_path)

    async def refuse(pool: str, count: int) -> list[Instance]:
        raise ConnectionError("quota exceeded for nvidia-t4 in r-east")

    rig.provider.add = refuse  # type: ignore[method-assign]
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    with capture_logs() as logs:
        proposal = await rig.loop.replan("test")
        assert proposal is not None
        with pytest.raises(ApplyFailed):
            await rig.loop.approve(proposal.id, "admin")
    (failed,) = [e for e in logs if e["event"] == "capacity.apply_failed"]
    assert failed["step"] == ["add", "east", ""]
    assert "quota exceeded" in failed["error"]
    assert rig.routed() == {}
    assert "add east failed" in rig.loop.state.last_error


async def test_auto_mode_applies_without_approval(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    rig.loop.settings = rig.cfg.capacity.model_copy(update={"apply": "auto"})
    rig.calls("static-1/large", 2.0)
    await rig.loop.step()  # observe, first plan due, applied at once
    assert not rig.loop.state.pending
    assert rig.routed() == {"east-1": ["large"]}
    await rig.loop.step()  # nothing due: no re-plan, nothing changes
    assert rig.loop.observe() is None
    rig.calls("east-1/small", 2.0)  # a class the last plan did not know: re-plan soon
    assert rig.loop.observe() is None  # not sooner than min_replan_s after the last plan
    rig.clock.t += rig.cfg.capacity.min_replan_s
    rig.calls("east-1/small", 2.0)
    due = rig.loop.observe()
    assert due is not None and due.reason == "new demand class: summarize/q>=0.7/300ms/r-east"


def test_footprints_declared_then_measured_and_a_full_gpu_takes_nothing() -> None:
    book = FootprintBook({"large": 12.0}, default_gb=8.0)
    assert book.footprint_gb("large") == 12.0 and book.footprint_gb("other") == 8.0
    before = MemoryReading(3_000_000_000, 16_000_000_000, 1000)
    book.admit("i-1", "other", before, 0.1)  # 3 + 8 <= 14.4: fits
    with pytest.raises(GpuFull, match="no new variant here"):
        book.admit("i-1", "large", before, 0.1)  # 3 + 12 > 14.4
    book.loaded("i-1", "large", before, loaded_ms=1500)
    readings = {"i-1": MemoryReading(9_000_000_000, 16_000_000_000, 1400)}
    assert book.measure(readings.get) == []  # a reading from before the load finished
    readings["i-1"] = MemoryReading(10_500_000_000, 16_000_000_000, 1600)
    assert book.measure(readings.get) == [("large", pytest.approx(7.5))]
    assert book.footprint_gb("large") == pytest.approx(7.5) and book.samples("large") == 1
    assert book.measure(readings.get) == []  # one sample per load


def test_capacity_config_errors_name_the_path(tmp_path: pathlib.Path) -> None:
    (tmp_path / "mars.toml").write_text(MESH.replace('id = "east"\nregion = "r-east"',
                                                     'id = "east"\nregion = "mars"'))
    with pytest.raises(ConfigError, match=r"capacity\.pools\[0\]\.region 'mars'"):
        load_config(tmp_path / "mars.toml")
    bad = MESH.replace('variants = ["small", "large"]\ngpu_memory_gb',
                       'variants = ["small", "huge"]\ngpu_memory_gb')
    (tmp_path / "prices.toml").write_text(PRICES)
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"capacity\.pools\[0\]\.variants 'huge'"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "apply.toml").write_text(MESH.replace('apply = "approve"', 'apply = "never"'))
    with pytest.raises(ConfigError, match=r"capacity\.apply"):
        load_config(tmp_path / "apply.toml")


def cand(dep: str, quality: float, cost: float, dropped: str = "") -> Candidate:
    backend, variant = dep.split("/")
    return Candidate(dep, backend, "127.0.0.1:1", variant, "r-east", "aws", "gpu", quality,
                     10.0, 1.0, 0.0, 5.0, cost, 100.0, dropped_reason=dropped)


@pytest.mark.parametrize(("small_cost", "dropped", "floor"), [
    (0.5, "", 0.9),  # a cheaper lower-quality deployment existed: the calls asked for 0.9
    (0.98, "", 0.7),  # within the 5 % spread band: loose calls land on large too
    (0.5, "backend drained by operator", 0.7),  # not usable, so no evidence of a floor
])
def test_a_class_floor_is_inferred_from_the_route_table(
        tmp_path: pathlib.Path, small_cost: float, dropped: str, floor: float) -> None:
    rig = Rig(tmp_path)
    table = [cand("a/small", 0.7, small_cost, dropped), cand("a/large", 0.9, 1.0)]
    rig.loop.candidates = lambda model, region: table
    rig.calls("a/large", 4.0)
    assert rig.loop.observed_rates() == {
        ClassKey("summarize", floor, 300.0, "r-east"): 4.0}


def test_approving_a_plan_needs_the_admin_role() -> None:
    policy = AuthzPolicy(frozenset({"admin.local"}), {}, frozenset({"edge.local"}))
    method = "/switchyard.v1.Capacity/ApprovePlan"
    denied = policy.check(method, ("edge.local",))
    assert denied is not None and denied.code is grpc.StatusCode.PERMISSION_DENIED
    assert policy.check(method, ("admin.local",)) is None


def test_a_class_below_min_class_rps_is_not_planned(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    rig.calls("static-1/large", 0.1)  # a stray call every 10 s
    rig.loop.observe()
    assert rig.loop.demand() == ()
    rig.calls("static-1/small", 2.0)
    rig.loop.observe()
    assert [(d.min_quality, d.rate_rps) for d in rig.loop.demand()] == [(0.7, pytest.approx(2.2))]


def test_plan_command_flags() -> None:
    from services.cli import parser

    assert parser().parse_args(["plan"]).approve is None  # show only
    assert parser().parse_args(["plan", "--approve"]).approve == ""  # the pending plan
    args = parser().parse_args(["plan", "--replan", "--approve", "abc123"])
    assert (args.replan, args.approve) == (True, "abc123")


async def test_the_plan_uses_the_compute_its_instances_measured(tmp_path: pathlib.Path
                                                                 ) -> None:
    rig = Rig(tmp_path)
    rig.calls("static-1/small", 3.0)
    rig.loop.observe()
    compute = {v.name: v.compute_ms for v in rig.loop.problem().variants}
    assert compute == {"small": 20.0, "large": 40.0}  # declared, nothing measured yet
    first = await rig.loop.replan("test")
    assert first is not None
    await rig.loop.approve(first.id, "admin")
    rig.service.fleet.backends["east-1"].loads["small"] = VariantLoad(compute_ms=31.0)
    compute = {v.name: v.compute_ms for v in rig.loop.problem().variants}
    assert compute == {"small": 31.0, "large": 40.0}  # the pool's speed is 1


def test_instance_statistics_count_from_the_warm_up_baseline(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path)
    base = ModelStats(variant="small", inference_count=2, compute_infer_ns=900_000_000)
    reader = InstanceTelemetry(rig.service, dict, baselines={("east-1", "small"): base})
    now = ModelStats(variant="small", inference_count=10, compute_infer_ns=1_060_000_000,
                     ready=True)
    since = reader._since_baseline("east-1", now)
    # the two cold calls (450 ms each) are left out: 8 warm calls of 20 ms
    assert (since.inference_count, since.compute_infer_ns, since.ready) == (8, 160_000_000, True)
    restarted = ModelStats(variant="small", inference_count=1, compute_infer_ns=5)
    assert reader._since_baseline("east-1", restarted) == restarted  # counters went back
    assert reader._since_baseline("other", now) == now  # no baseline: as reported


@pytest.mark.parametrize("carry", [True, False])
async def test_demand_past_the_pools_limits_is_planned_for_what_they_carry(
        tmp_path: pathlib.Path, carry: bool) -> None:
    """More calls than two GPUs can serve within the SLO: by default the loop plans the
    pool's limit and says what it leaves out (the benchmark's planner runs so); with
    ``carry_what_fits = false`` the re-plan is refused and audited, as before."""
    rig = Rig(tmp_path, carry_what_fits=carry)
    rig.calls("static-1/small", 2000.0)
    rig.loop.observe()
    with capture_logs() as logs:
        proposal = await rig.loop.replan("test")
    if carry:
        assert proposal is not None
        plan = proposal.decision.plan
        assert plan.gpus() == {"east": 2}
        assert plan.not_carried and sum(rps for _, rps in plan.not_carried) > 0
        assert "not carried" in rig.loop.state.reason
        assert "capacity.infeasible" not in events(logs)
    else:
        assert proposal is None
        assert "capacity.infeasible" in events(logs)
