"""``switchyard plan`` and the capacity part of ``switchyard status``, as text.

``plan`` asks placement's ``Capacity`` service for the current placement and the last
proposal (``--replan``: solve a fresh one now) and prints both side by side, the change in
$/hour, why (the forecast classes and what serves them) and the variants' footprints;
``--approve [PLAN_ID]`` applies the pending plan (``[capacity] apply = "approve"``).
"""

from __future__ import annotations

import datetime
import shlex
from typing import Any

import grpc

from services.api.switchyard.v1 import capacity_pb2, capacity_pb2_grpc
from services.cli_help import DEFAULT_CONFIG
from services.cli_placement import admin_channel
from services.render import table
from services.security.settings import SecuritySettings


def _pools(view: Any) -> dict[str, Any]:
    return {p.pool: p for p in view.pools}


def again_command(config: str, placement: str = "") -> str:
    """``switchyard plan`` as this one reached its placement (``--config``, ``--placement``):
    the ``next: ... --approve ID`` line, pasted, asks the same placement (it asked the
    default config's)."""
    parts = ["switchyard", "plan"]
    if config != DEFAULT_CONFIG:
        parts += ["--config", config]
    if placement:
        parts += ["--placement", placement]
    return shlex.join(parts)


def render_plan(resp: capacity_pb2.GetPlanResponse, again: str = "switchyard plan") -> str:
    has = resp.HasField("proposed")
    state = ("pending approval" if resp.pending else
             "no proposal yet" if not has else "adopted" if _same(resp) else "kept current")
    when = (datetime.datetime.fromtimestamp(resp.planned_unix_s, datetime.UTC)
            .strftime("%H:%M:%S UTC") if resp.planned_unix_s else "-")
    lines = [f"capacity plan (apply = {resp.apply_mode}): {state}"
             + (f", plan {resp.plan_id} solved {when}" if resp.plan_id else ""),
             f"why: {resp.reason}", ""]
    cur, new = _pools(resp.current), _pools(resp.proposed) if has else {}
    rows = []
    for pool in sorted(set(cur) | set(new)):
        c, n = cur.get(pool), new.get(pool)
        rows.append([pool, c.gpus if c else 0, ",".join(c.variants) if c else "-",
                     n.gpus if n else 0 if has else "?",
                     (",".join(n.variants) if n else "-") if has else "?",
                     f"{c.usd_per_hour:.3f}" if c else "0.000",
                     (f"{n.usd_per_hour:.3f}" if n else "0.000") if has else "?",
                     f"{n.utilisation:.0%}" if n else "-"])
    lines.append(table(["pool", "GPUs now", "variants now", "GPUs proposed",
                        "variants proposed", "$/h now", "$/h proposed", "utilisation"], rows)
                 if rows else "  no pool runs a GPU and none is proposed")
    if has:
        delta = resp.proposed.usd_per_hour - resp.current.usd_per_hour
        lines.append(f"\n$/hour: {resp.current.usd_per_hour:.3f} now -> "
                     f"{resp.proposed.usd_per_hour:.3f} proposed ({delta:+.3f})")
    if resp.needs:
        lines.append("\nforecast classes (what needs the capacity):")
        lines.append(table(["class", "calls/s", "served by"],
                           [[n.demand_class, f"{n.rate_rps:.2f}", "; ".join(n.served_by) or "-"]
                            for n in resp.needs]))
    elif has:
        lines.append("\nforecast classes: none with demand (no calls observed)")
    if resp.footprints:
        lines.append("\nGPU memory per variant: " + "; ".join(
            f"{f.variant} {f.memory_gb:.2f} GB "
            + (f"(measured, {f.samples} load(s))" if f.measured else "(declared)")
            for f in resp.footprints))
    if resp.last_error:
        lines.append(f"\nlast apply FAILED: {resp.last_error}")
    if resp.pending:
        lines.append(f"\nnext: {again} --approve {resp.plan_id}")
    return "\n".join(lines)


def _same(resp: capacity_pb2.GetPlanResponse) -> bool:
    def key(view: Any) -> set[tuple[str, int, tuple[str, ...]]]:
        return {(p.pool, p.gpus, tuple(p.variants)) for p in view.pools}
    return key(resp.current) == key(resp.proposed)


def plan_main(address: str, replan: bool, approve: str | None,
              again: str = "switchyard plan", security: SecuritySettings | None = None) -> int:
    """``switchyard plan``; ``approve``: None = show only, "" = the pending plan, else its id;
    ``again``: the command that reaches this placement again (its ``--config`` or
    ``--placement``), which the ``next:`` line names; ``security``: how to dial it (the
    config's ``[security]``; None: plaintext)."""
    stub = capacity_pb2_grpc.CapacityStub(admin_channel(address, security))
    resp = stub.GetPlan(capacity_pb2.GetPlanRequest(replan=replan), timeout=120)
    if approve is None:
        print(render_plan(resp, again))
        return 0
    plan_id = approve or resp.plan_id
    if not approve and not resp.pending:
        print(render_plan(resp, again))
        print("\nswitchyard: nothing to approve: no plan is pending")
        return 1
    done = stub.ApprovePlan(capacity_pb2.ApprovePlanRequest(plan_id=plan_id), timeout=600)
    print(f"applied plan {plan_id}: {len(done.actions)} step(s)")
    for a in done.actions:
        print(f"  {a}")
    print(table(["pool", "GPUs", "variants", "$/h"],
                [[p.pool, p.gpus, ",".join(p.variants), f"{p.usd_per_hour:.3f}"]
                 for p in done.current.pools]) if done.current.pools else "  no GPUs now")
    return 0


def status_section(backends: Any, address: str,
                   security: SecuritySettings | None = None) -> str:
    """Variants per backend (what the route tables carry) and, with the loop on, pool sizes."""
    lines = ["variants per backend (loaded and routed)",
             table(["backend", "variants"],
                   [[s.backend.id, ", ".join(v.variant for v in s.backend.variants) or "-"]
                    for s in backends.backends])]
    stub = capacity_pb2_grpc.CapacityStub(admin_channel(address, security))
    try:
        resp = stub.GetPlan(capacity_pb2.GetPlanRequest(), timeout=10)
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            lines.append("\ncapacity pools: the capacity loop is off ([capacity] enabled = "
                         "false)")
            return "\n".join(lines)
        raise
    lines.append(f"\ncapacity pools (apply = {resp.apply_mode}"
                 + (", a plan is pending: switchyard plan" if resp.pending else "") + ")")
    lines.append(table(["pool", "GPUs", "variants", "$/h", "instances"],
                       [[p.pool, p.gpus, ",".join(p.variants), f"{p.usd_per_hour:.3f}",
                         ",".join(p.instances)] for p in resp.current.pools])
                 if resp.current.pools else "  no pool runs a GPU")
    return "\n".join(lines)
