"""Make the fleet match a plan: GPUs per pool and the variants each loads.

Order, so capacity never dips below both plans while it changes: (1) add GPUs and load
their variants; (2) load new variants on GPUs that stay; only then (3) drain and unload
variants a pool no longer runs, and (4) drain every variant of a GPU that goes, then remove
it. A loaded variant is handed to the ``RoutingGate`` (``start``) only after Triton reports it
ready; an unload always drains first (:meth:`ModelControl.drain_and_unload`).

An instance whose server does not answer (its tritonserver died: :class:`ModelControlError`
from ``loaded``) serves nothing: :meth:`placement` leaves it out (``unreachable`` names it)
and :meth:`apply` removes it first, without a drain (there is no queue to drain), so the
plan's GPUs are added in its place. A variant a server holds loaded that the gate does not
route (a drain that timed out after the gate stopped it) is not serving either:
:meth:`placement` counts only what is loaded and routed, and step (2) routes it again when
the target keeps it.

The target is ``placement.planner.Plan.gpus()`` / ``loaded()`` as :class:`PoolTarget`s; the
planner itself is not imported (its solver is not a runtime dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from placement.errors import SwitchyardError
from services.capacity.model_control import (
    DrainReport,
    ModelControl,
    ModelControlError,
    RoutingGate,
)
from services.capacity.provider import Instance, Provider

log = structlog.get_logger("switchyard.capacity")


@dataclass(frozen=True, slots=True)
class PoolTarget:
    gpus: int
    variants: frozenset[str]


class Control(Protocol):
    """What the actor needs of :class:`ModelControl` (a fake in unit tests)."""

    async def loaded(self) -> frozenset[str]: ...

    async def load(self, variant: str) -> None: ...

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class ApplyReport:
    """Every action taken, in order, as ``(verb, instance id, variant or "")``."""

    actions: list[tuple[str, str, str]] = field(default_factory=list)


class ApplyFailed(SwitchyardError):
    """A step of :meth:`CapacityActor.apply` failed; ``report`` holds the steps taken before
    it (nothing after the failed step was attempted: no drain or removal follows a failed add
    or load, so capacity never drops below the plan being left)."""

    grpc_code = "UNAVAILABLE"

    def __init__(self, step: tuple[str, str, str], cause: BaseException,
                 report: ApplyReport) -> None:
        verb, iid, variant = step
        super().__init__(f"{verb} {iid}{' ' + variant if variant else ''} failed: {cause} "
                         f"(after {len(report.actions)} step(s) applied)")
        self.step = step
        self.cause = cause
        self.report = report


class CapacityActor:
    def __init__(self, provider: Provider, gate: RoutingGate,
                 control: Callable[[Instance], Control] = ModelControl) -> None:
        self.provider = provider
        self.gate = gate
        self._control_of = control
        self._controls: dict[str, Control] = {}
        self._step: tuple[str, str, str] = ("", "", "")  # the step under way, for ApplyFailed
        self.unreachable: dict[str, str] = {}  # instance id -> why, as the last read found

    def _control(self, inst: Instance) -> Control:
        if inst.id not in self._controls:
            self._controls[inst.id] = self._control_of(inst)
        return self._controls[inst.id]

    async def _load(self, inst: Instance, variant: str, report: ApplyReport) -> None:
        self._step = ("load", inst.id, variant)
        await self._control(inst).load(variant)
        await self.gate.start(inst, variant)
        report.actions.append(("load", inst.id, variant))

    async def _unload(self, inst: Instance, variant: str, report: ApplyReport) -> None:
        self._step = ("unload", inst.id, variant)
        await self._control(inst).drain_and_unload(variant, self.gate)
        report.actions.append(("unload", inst.id, variant))

    async def _loaded(self, inst: Instance) -> frozenset[str] | None:
        """What ``inst``'s server reports loaded; None (and ``unreachable`` names it) when
        the server does not answer."""
        try:
            have = await self._control(inst).loaded()
        except ModelControlError as exc:
            if inst.id not in self.unreachable:
                log.warning("capacity.instance_unreachable", instance=inst.id, pool=inst.pool,
                            error=exc.message)
            self.unreachable[inst.id] = exc.message
            return None
        self.unreachable.pop(inst.id, None)
        return have

    async def placement(self, pools: list[str]) -> dict[str, list[tuple[Instance, frozenset[str]]]]:
        """Each pool's reachable instances and the variants each serves: loaded, as its
        server says, and routed by the gate. An unreachable instance is left out (it serves
        nothing; ``unreachable`` says why)."""
        out: dict[str, list[tuple[Instance, frozenset[str]]]] = {}
        for p in pools:
            out[p] = []
            for i in self.provider.instances(p):
                have = await self._loaded(i)
                if have is not None:
                    out[p].append((i, have & self.gate.routed(i.id)))
        return out

    async def _add(self, pool: str, count: int, report: ApplyReport) -> list[Instance]:
        """``provider.add``; when it fails after starting some instances (the 2nd of two
        never got ready), those it started are in ``report`` before the error goes on: a GPU
        that runs, and is paid for, is in the failure's report and the audit."""
        before = {i.id for i in self.provider.instances(pool)}
        try:
            return await self.provider.add(pool, count)
        except Exception:
            for inst in self.provider.instances(pool):
                if inst.id not in before:
                    report.actions.append(("add", inst.id, ""))
            raise

    async def _drop(self, inst: Instance, report: ApplyReport) -> None:
        """Remove an instance whose server does not answer: out of the route tables, then
        the provider's removal (no drain: a dead server has no queue, and could not be
        asked for one)."""
        self._step = ("remove", inst.id, "")
        for v in sorted(self.gate.routed(inst.id)):
            await self.gate.stop(inst, v)
        control = self._controls.pop(inst.id, None)
        if control is not None:
            await control.close()
        await self.provider.remove(inst)
        self.unreachable.pop(inst.id, None)
        report.actions.append(("remove", inst.id, ""))

    async def apply(self, target: Mapping[str, PoolTarget]) -> ApplyReport:
        """Make the fleet match ``target``; raise :class:`ApplyFailed` at the first failed
        step, carrying the steps taken before it."""
        report = ApplyReport()
        try:
            return await self._apply(target, report)
        except ApplyFailed:
            raise
        except Exception as exc:
            raise ApplyFailed(self._step, exc, report) from exc

    async def _apply(self, target: Mapping[str, PoolTarget], report: ApplyReport
                     ) -> ApplyReport:
        for pool in sorted(target):  # (0) a dead server serves nothing: replace it
            for inst in self.provider.instances(pool):
                if await self._loaded(inst) is None:
                    await self._drop(inst, report)
        for pool, want in sorted(target.items()):  # (1) grow
            missing = want.gpus - len(self.provider.instances(pool))
            if missing > 0:
                self._step = ("add", pool, "")
                for inst in await self._add(pool, missing, report):
                    report.actions.append(("add", inst.id, ""))
                    for v in sorted(want.variants):
                        await self._load(inst, v, report)
        for pool, want in sorted(target.items()):  # (2) load on GPUs that stay
            for inst in self.provider.instances(pool)[:want.gpus]:
                have = await self._control(inst).loaded()
                for v in sorted(want.variants - have):
                    await self._load(inst, v, report)
                for v in sorted((want.variants & have) - self.gate.routed(inst.id)):
                    self._step = ("route", inst.id, v)  # loaded, not routed: route it again
                    await self.gate.start(inst, v)
                    report.actions.append(("route", inst.id, v))
        for pool, want in sorted(target.items()):  # (3) unload, (4) shrink
            instances = self.provider.instances(pool)
            for inst in instances[:want.gpus]:
                for v in sorted(await self._control(inst).loaded() - want.variants):
                    await self._unload(inst, v, report)
            for inst in instances[want.gpus:]:
                for v in sorted(await self._control(inst).loaded()):
                    await self._unload(inst, v, report)
                control = self._controls.pop(inst.id, None)
                if control is not None:
                    await control.close()
                self._step = ("remove", inst.id, "")
                await self.provider.remove(inst)
                report.actions.append(("remove", inst.id, ""))
        return report

    async def close(self) -> None:
        for c in self._controls.values():
            await c.close()
        self._controls.clear()
