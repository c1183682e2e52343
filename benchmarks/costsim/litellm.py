"""A LiteLLM-style router: ``routing_strategy="cost-based-routing"`` with cooldowns.

What LiteLLM does (read from BerriAI/litellm ``litellm/router_strategy/lowest_cost.py``
``LowestCostLoggingHandler.async_get_available_deployments`` and
``litellm/router_utils/cooldown_handlers.py``; docs: docs.litellm.ai/docs/router/learn/
reliability), and how it is modelled here:

- **Cost** is static per deployment: ``input_cost_per_token + output_cost_per_token`` from
  the deployment's ``litellm_params`` (or LiteLLM's model cost map). Here the operator sets
  it from the list price: ``usd_per_gpu_hour / 3600 × compute_ms / speed`` (nominal).
  It never changes with load or latency.
- **Selection**: among the model group's healthy deployments (not cooling down), drop
  those whose requests in the current calendar minute would exceed their configured
  ``rpm`` (here: the pool's nominal capacity per minute, each variant alone), sort by cost,
  take the first. No notion of the caller's region, RTT, queue or SLO.
- **Cooldown** (v2 logic): a deployment is cooled down for ``cooldown_time`` (default
  5 s) on a 429 (rate limit; here: Triton's queue full, RESOURCE_EXHAUSTED) when the
  group has more than one deployment, or when its failures this minute exceed 50 % of its
  calls this minute with at least 5 calls (here: UNAVAILABLE from a backend that is down).
- **Model groups**: LiteLLM has no per-call quality floor; an operator would configure one
  group per floor, so a call's group is the variants that meet its floor.
- **Health**: none from telemetry: a LiteLLM router learns about an outage only from
  failed calls. Retries pick again skipping the deployments that failed (same
  ``max_attempts`` as every policy). One router per edge region, no shared Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.costsim.policies import Attempt
from benchmarks.costsim.scenario import CallClass, Scenario

COOLDOWN_S = 5.0
FAILURE_THRESHOLD = 0.5
MIN_REQUESTS = 5


@dataclass(slots=True)
class _Deployment:
    id: str
    cost: float
    rpm: float


@dataclass(slots=True)
class _RouterState:
    minute: int = -1
    calls: dict[str, int] = field(default_factory=dict)  # this minute, per deployment
    fails: dict[str, int] = field(default_factory=dict)
    successes: dict[str, int] = field(default_factory=dict)
    cooldown_until: dict[str, float] = field(default_factory=dict)


class LiteLLMCostRouter:
    name = "litellm-cost"

    def __init__(self, scenario: Scenario) -> None:
        self.control = None
        self.groups: dict[CallClass, list[_Deployment]] = {}
        for k in scenario.classes():
            deps = []
            for p in scenario.pools:
                for v in p.variants:
                    spec = scenario.variant(v)
                    if spec.model != k.model or spec.quality < k.min_quality:
                        continue
                    service_ms = spec.compute_ms / p.speed
                    deps.append(_Deployment(f"{p.id}/{v}",
                                            p.usd_per_gpu_hour / 3600 * service_ms / 1000,
                                            p.servers * 60_000 / service_ms))
            deps.sort(key=lambda d: d.cost)  # LiteLLM sorts by cost; stable for ties
            self.groups[k] = deps
        self.routers: dict[str, _RouterState] = {r: _RouterState() for r in scenario.regions}
        self.cooldowns = 0

    def _state(self, edge: str, now: float) -> _RouterState:
        st = self.routers[edge]
        minute = int(now // 60)
        if minute != st.minute:
            st.minute, st.calls, st.fails, st.successes = minute, {}, {}, {}
        return st

    def choose(self, a: Attempt) -> str | None:
        st = self._state(a.edge, a.now)
        group = self.groups[a.klass]
        for d in group:  # sorted by cost: the first that passes is the cheapest
            if d.id in a.exclude or st.cooldown_until.get(d.id, -1.0) > a.now:
                continue
            if st.calls.get(d.id, 0) + 1 > d.rpm:
                continue
            st.calls[d.id] = st.calls.get(d.id, 0) + 1
            return d.id
        return None

    def result(self, a: Attempt, deployment_id: str, latency_ms: float, status: str,
               now: float) -> None:
        st = self._state(a.edge, now)
        if status == "ok":
            st.successes[deployment_id] = st.successes.get(deployment_id, 0) + 1
            return
        fails = st.fails[deployment_id] = st.fails.get(deployment_id, 0) + 1
        total = fails + st.successes.get(deployment_id, 0)
        group_size = len(self.groups[a.klass])
        if (status == "exhausted" and group_size > 1) or (
                total >= MIN_REQUESTS and fails / total > FAILURE_THRESHOLD):
            st.cooldown_until[deployment_id] = now + COOLDOWN_S
            self.cooldowns += 1
