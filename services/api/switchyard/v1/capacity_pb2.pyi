from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoolPlacement(_message.Message):
    __slots__ = ("pool", "gpus", "variants", "usd_per_hour", "instances", "utilisation")
    POOL_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    pool: str
    gpus: int
    variants: _containers.RepeatedScalarFieldContainer[str]
    usd_per_hour: float
    instances: _containers.RepeatedScalarFieldContainer[str]
    utilisation: float
    def __init__(self, pool: _Optional[str] = ..., gpus: _Optional[int] = ..., variants: _Optional[_Iterable[str]] = ..., usd_per_hour: _Optional[float] = ..., instances: _Optional[_Iterable[str]] = ..., utilisation: _Optional[float] = ...) -> None: ...

class PlacementView(_message.Message):
    __slots__ = ("pools", "usd_per_hour")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolPlacement]
    usd_per_hour: float
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolPlacement, _Mapping]]] = ..., usd_per_hour: _Optional[float] = ...) -> None: ...

class ClassNeed(_message.Message):
    __slots__ = ("demand_class", "rate_rps", "served_by")
    DEMAND_CLASS_FIELD_NUMBER: _ClassVar[int]
    RATE_RPS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    demand_class: str
    rate_rps: float
    served_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, demand_class: _Optional[str] = ..., rate_rps: _Optional[float] = ..., served_by: _Optional[_Iterable[str]] = ...) -> None: ...

class Footprint(_message.Message):
    __slots__ = ("variant", "memory_gb", "measured", "samples")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    variant: str
    memory_gb: float
    measured: bool
    samples: int
    def __init__(self, variant: _Optional[str] = ..., memory_gb: _Optional[float] = ..., measured: _Optional[bool] = ..., samples: _Optional[int] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("replan",)
    REPLAN_FIELD_NUMBER: _ClassVar[int]
    replan: bool
    def __init__(self, replan: _Optional[bool] = ...) -> None: ...

class GetPlanResponse(_message.Message):
    __slots__ = ("apply_mode", "current", "proposed", "pending", "plan_id", "reason", "needs", "footprints", "last_error", "planned_unix_s")
    APPLY_MODE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PLANNED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    apply_mode: str
    current: PlacementView
    proposed: PlacementView
    pending: bool
    plan_id: str
    reason: str
    needs: _containers.RepeatedCompositeFieldContainer[ClassNeed]
    footprints: _containers.RepeatedCompositeFieldContainer[Footprint]
    last_error: str
    planned_unix_s: float
    def __init__(self, apply_mode: _Optional[str] = ..., current: _Optional[_Union[PlacementView, _Mapping]] = ..., proposed: _Optional[_Union[PlacementView, _Mapping]] = ..., pending: _Optional[bool] = ..., plan_id: _Optional[str] = ..., reason: _Optional[str] = ..., needs: _Optional[_Iterable[_Union[ClassNeed, _Mapping]]] = ..., footprints: _Optional[_Iterable[_Union[Footprint, _Mapping]]] = ..., last_error: _Optional[str] = ..., planned_unix_s: _Optional[float] = ...) -> None: ...

class ApprovePlanRequest(_message.Message):
    __slots__ = ("plan_id",)
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    def __init__(self, plan_id: _Optional[str] = ...) -> None: ...

class ApprovePlanResponse(_message.Message):
    __slots__ = ("actions", "current")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedScalarFieldContainer[str]
    current: PlacementView
    def __init__(self, actions: _Optional[_Iterable[str]] = ..., current: _Optional[_Union[PlacementView, _Mapping]] = ...) -> None: ...
