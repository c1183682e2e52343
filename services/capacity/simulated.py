"""The simulated provider: GPUs that take minutes to arrive, spot GPUs the cloud takes back,
and the provisioned bill (GPU-seconds × price, busy or idle).

Time is injected (``now`` and an awaitable ``sleep``), so a cost simulation runs it on its
own clock. Billing follows the clouds: a GPU is billed from the moment it is requested
(while it boots) until it is removed or reclaimed. Instances have ``sim://`` endpoints;
nothing listens on them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from placement.errors import ConfigError
from services.capacity.provider import Instance


@dataclass(frozen=True, slots=True)
class SimPool:
    usd_per_gpu_hour: float
    price_class: str = "on-demand"
    provision_delay_s: float = 180.0


@dataclass(slots=True)
class _Lease:
    instance: Instance
    start_s: float
    end_s: float | None = None


class SimulatedProvider:
    def __init__(self, pools: Mapping[str, SimPool], now: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.pools = dict(pools)
        self._now = now
        self._sleep = sleep
        self._leases: list[_Lease] = []
        self._serial = 0

    def instances(self, pool: str) -> list[Instance]:
        return [lease.instance for lease in self._leases
                if lease.instance.pool == pool and lease.end_s is None
                and lease.start_s + self.pools[pool].provision_delay_s <= self._now()]

    async def add(self, pool: str, count: int) -> list[Instance]:
        """Request ``count`` GPUs (billed from now) and return them once provisioned."""
        if pool not in self.pools:
            raise ConfigError(f"pool {pool!r} is not one of {sorted(self.pools)}")
        new = []
        for _ in range(count):
            self._serial += 1
            iid = f"{pool}-{self._serial}"
            inst = Instance(iid, pool, f"sim://{iid}", f"sim://{iid}/metrics")
            self._leases.append(_Lease(inst, self._now()))
            new.append(inst)
        await self._sleep(self.pools[pool].provision_delay_s)
        return new

    async def remove(self, instance: Instance) -> None:
        self._end(instance)

    def reclaim(self, pool: str, count: int) -> list[Instance]:
        """The cloud takes ``count`` spot GPUs back (the newest first); returns them."""
        if self.pools[pool].price_class != "spot":
            raise ConfigError(f"pool {pool!r} is {self.pools[pool].price_class}; only spot "
                              "capacity is reclaimed")
        taken = self.instances(pool)[-count:] if count else []
        for inst in taken:
            self._end(inst)
        return taken

    def _end(self, instance: Instance) -> None:
        lease = next(le for le in self._leases if le.instance == instance and le.end_s is None)
        lease.end_s = self._now()

    def gpu_seconds(self, pool: str) -> float:
        """GPU-seconds billed so far in ``pool``, booting GPUs included."""
        now = self._now()
        return sum((le.end_s if le.end_s is not None else now) - le.start_s
                   for le in self._leases if le.instance.pool == pool)

    def billed_usd(self) -> float:
        """The provisioned bill so far, every pool."""
        return sum(self.gpu_seconds(p) * spec.usd_per_gpu_hour / 3600.0
                   for p, spec in self.pools.items())
