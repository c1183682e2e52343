"""The capacity section of ``switchyard demo``: a demand shift re-places variants live.

Runs only when the mesh's ``[capacity]`` is enabled (``examples/mesh-capacity.toml``; the
default mesh leaves it off so ``demo.sh`` stays quick: a live re-placement starts real
tritonserver processes and waits for the forecast to notice the shift). Steps, all through
the mesh's public interfaces (tritonclient calls through an edge, placement's ``Capacity``
service):

1. steady tritonclient load with no quality floor; the demo asks for a plan
   (``switchyard plan --replan``) and approves it when ``apply = "approve"``: a cheap pool
   loads the small variant and takes the calls;
2. the share of calls asking ``x-min-quality: 0.85`` rises to all of them; once the
   planner's forecast drops the quiet class, the next plan loads the better variant on the
   cheap pool and unloads the idle one, under load;
3. before/after tables: placement, $/hour, calls per deployment, failed calls.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np
import tritonclient.grpc as tc

from services.api.switchyard.v1 import capacity_pb2, capacity_pb2_grpc
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.render import table

QUALITY_FLOOR = "0.85"


@dataclass
class SteadyLoad:
    """Calls at ``rate_per_s`` through one edge on a thread; ``quality_share`` of them carry
    ``x-min-quality``. Counts where calls were served and every failure (never retried)."""

    address: str
    rate_per_s: float = 8.0
    quality_share: float = 0.0
    dim: int = 16
    served: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def take(self) -> tuple[Counter[str], list[str]]:
        """Counts since the last take."""
        served, failures = self.served, self.failures
        self.served, self.failures = Counter(), []
        return served, failures

    def _run(self) -> None:
        client = tc.InferenceServerClient(self.address)
        x = tc.InferInput("INPUT0", [1, self.dim], "FP32")
        x.set_data_from_numpy(np.ones((1, self.dim), np.float32))
        n = 0
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                n += 1
                quality = (n * self.quality_share) % 1.0 + self.quality_share >= 1.0
                md = [("x-min-quality", QUALITY_FLOOR)] if quality else []
                try:
                    _, tr = infer_with_trailers(client, "summarize", [x], md, 10.0)
                    self.served[tr.get("x-served-by", "?")] += 1
                except Exception as exc:  # every failure is counted and shown
                    self.failures.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                self._stop.wait(max(0.0, 1.0 / self.rate_per_s - (time.monotonic() - t0)))
        finally:
            client.close()


def warm_static(cfg: MeshConfig, calls: int = 10, report_wait_s: float = 3.0) -> None:
    """Direct calls to each static backend's summarize variants (not through an edge, so
    they are no demand): agents report measured compute before the demo's calls start,
    and edges price the variants by what they cost rather than by a prior."""
    names = {v.name for m in cfg.models if m.name == "summarize" for v in m.variants}
    dim = next(m.input_dim for m in cfg.models if m.name == "summarize")
    for b in cfg.backends:
        client = tc.InferenceServerClient(b.endpoint)
        try:
            for v in sorted(names & set(b.variants)):
                x = tc.InferInput("INPUT0", [1, dim], "FP32")
                x.set_data_from_numpy(np.zeros((1, dim), np.float32))
                for _ in range(calls):
                    client.infer(v, [x], client_timeout=30)
        finally:
            client.close()
    time.sleep(report_wait_s)  # one agent report (its interval) carries the statistics


def _stub(cfg: MeshConfig, address: str = "") -> capacity_pb2_grpc.CapacityStub:
    p = cfg.placement
    return capacity_pb2_grpc.CapacityStub(grpc.insecure_channel(address or
                                                                f"{p.host}:{p.port}"))


def settle_plan(stub: capacity_pb2_grpc.CapacityStub) -> capacity_pb2.GetPlanResponse:
    """Re-plan now; approve the proposal when it waits for approval (the demo is the
    operator here, and says so); return the placement afterwards."""
    resp = stub.GetPlan(capacity_pb2.GetPlanRequest(replan=True), timeout=120)
    if resp.pending:
        print(f"  approving plan {resp.plan_id} (as `switchyard plan --approve` would): "
              f"{resp.reason}", flush=True)
        done = stub.ApprovePlan(capacity_pb2.ApprovePlanRequest(plan_id=resp.plan_id),
                                timeout=600)
        for a in done.actions:
            print(f"    {a}", flush=True)
    now: capacity_pb2.GetPlanResponse = stub.GetPlan(capacity_pb2.GetPlanRequest(), timeout=30)
    return now


def _quiet(resp: capacity_pb2.GetPlanResponse, floor: float) -> bool:
    """The planner's demand has no class below ``floor`` any more."""
    return bool(resp.needs) and all(float(n.demand_class.split("q>=")[1].split("/")[0])
                                    >= floor for n in resp.needs)


def wait_served(load: SteadyLoad, resp: capacity_pb2.GetPlanResponse, timeout_s: float
                ) -> bool:
    """Until the load has calls served by a variant the plan just placed (edges move over
    as the new deployment's estimates settle); False, said, if none did in ``timeout_s``."""
    placed = {f"{i}/{v}" for p in resp.current.pools for i in p.instances for v in p.variants}
    t0 = time.monotonic()
    while not placed & {d for d, n in load.served.items() if n}:
        if time.monotonic() - t0 > timeout_s:
            print(f"  note: no call reached {sorted(placed) or 'the pools'} within "
                  f"{timeout_s:g} s (edges found something cheaper for these calls)",
                  flush=True)
            return False
        time.sleep(0.2)
    return True


def placement_rows(resp: capacity_pb2.GetPlanResponse) -> list[list[str]]:
    return [[p.pool, str(p.gpus), ",".join(p.variants), f"{p.usd_per_hour:.3f}",
             ",".join(p.instances)] for p in resp.current.pools] or [["-", "0", "-", "0", "-"]]


def run_plan_demo(cfg: MeshConfig, placement: str = "", edge: str = "",
                  phase_s: float = 6.0, shift_timeout_s: float = 90.0,
                  settle_timeout_s: float = 30.0) -> dict[str, object]:
    """The capacity demo against a running mesh; returns what it printed, as data."""
    stub = _stub(cfg, placement)
    address = edge or f"{cfg.edges[0].host}:{cfg.edges[0].port}"
    print(f"\ncapacity demo: managed pools {[p.id for p in cfg.capacity.pools]} "
          f"(local provider: real tritonserver per GPU, explicit model control), "
          f"apply = {cfg.capacity.apply}", flush=True)
    warm_static(cfg)
    dim = next(m.input_dim for m in cfg.models if m.name == "summarize")
    load = SteadyLoad(address, dim=dim).start()
    try:
        print("phase 1: calls with no quality floor", flush=True)
        time.sleep(phase_s)  # the edges report the call rates this phase sets up
        before = settle_plan(stub)
        wait_served(load, before, settle_timeout_s)
        _, failed_start = load.take()  # the first placement, under load
        time.sleep(phase_s)
        served_before, failed_before = load.take()
        failed_before = failed_start + failed_before
        print(f"phase 2: every call now asks x-min-quality {QUALITY_FLOOR}", flush=True)
        load.quality_share = 1.0
        t0 = time.monotonic()
        resp = stub.GetPlan(capacity_pb2.GetPlanRequest(replan=True), timeout=120)
        while not _quiet(resp, float(QUALITY_FLOOR)):
            if time.monotonic() - t0 > shift_timeout_s:
                print(f"  note: after {shift_timeout_s:g} s the planner still sees demand "
                      f"below quality {QUALITY_FLOOR}: {resp.reason}", flush=True)
                break
            time.sleep(1.0)  # the forecast learns from reports every observe_s
            resp = stub.GetPlan(capacity_pb2.GetPlanRequest(), timeout=30)
        after = settle_plan(stub)
        wait_served(load, after, settle_timeout_s)
        _, failed_shift = load.take()  # the wait and the re-placement, under load
        time.sleep(phase_s)
        served_after, failed_after = load.take()
    finally:
        load.stop()
    print("\nbefore the shift (no quality floor)")
    print(table(["pool", "GPUs", "variants", "$/h", "instances"], placement_rows(before)))
    print("\nafter the shift (all calls x-min-quality 0.85)")
    print(table(["pool", "GPUs", "variants", "$/h", "instances"], placement_rows(after)))
    deps = sorted(set(served_before) | set(served_after))
    print(f"\ncalls served per deployment ({phase_s:g} s of the same steady load after each "
          "placement)")
    print(table(["deployment", "before", "after"],
                [[d, str(served_before[d]), str(served_after[d])] for d in deps]))
    failures = failed_before + failed_shift + failed_after
    print(f"\nfailed calls: {len(failures)} (phase 1: {len(failed_before)}, the shift and the "
          f"re-placement: {len(failed_shift)}, after: {len(failed_after)})"
          + (f"; first: {failures[0]}" if failures else ""))
    print(f"plan: {after.reason}")
    return {"before": before, "after": after, "served_before": served_before,
            "served_after": served_after, "failures": failures}
