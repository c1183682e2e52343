from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Availability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVAILABILITY_UNSPECIFIED: _ClassVar[Availability]
    AVAILABILITY_ACTIVE: _ClassVar[Availability]
    AVAILABILITY_DRAINED: _ClassVar[Availability]
    AVAILABILITY_CORDONED: _ClassVar[Availability]
AVAILABILITY_UNSPECIFIED: Availability
AVAILABILITY_ACTIVE: Availability
AVAILABILITY_DRAINED: Availability
AVAILABILITY_CORDONED: Availability

class Region(_message.Message):
    __slots__ = ("name", "cloud")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    name: str
    cloud: str
    def __init__(self, name: _Optional[str] = ..., cloud: _Optional[str] = ...) -> None: ...

class RegionRtt(_message.Message):
    __slots__ = ("from_region", "to_region", "rtt_ms")
    FROM_REGION_FIELD_NUMBER: _ClassVar[int]
    TO_REGION_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    from_region: str
    to_region: str
    rtt_ms: float
    def __init__(self, from_region: _Optional[str] = ..., to_region: _Optional[str] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("accelerator", "cloud", "region", "price_class", "usd_per_gpu_hour", "source", "as_of")
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PRICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_GPU_HOUR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    accelerator: str
    cloud: str
    region: str
    price_class: str
    usd_per_gpu_hour: float
    source: str
    as_of: str
    def __init__(self, accelerator: _Optional[str] = ..., cloud: _Optional[str] = ..., region: _Optional[str] = ..., price_class: _Optional[str] = ..., usd_per_gpu_hour: _Optional[float] = ..., source: _Optional[str] = ..., as_of: _Optional[str] = ...) -> None: ...

class VariantRef(_message.Message):
    __slots__ = ("logical_model", "variant", "quality")
    LOGICAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    logical_model: str
    variant: str
    quality: float
    def __init__(self, logical_model: _Optional[str] = ..., variant: _Optional[str] = ..., quality: _Optional[float] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("id", "endpoint", "cloud", "region", "accelerator", "accelerator_count", "price_class", "variants", "max_concurrency")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    endpoint: str
    cloud: str
    region: str
    accelerator: str
    accelerator_count: int
    price_class: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantRef]
    max_concurrency: int
    def __init__(self, id: _Optional[str] = ..., endpoint: _Optional[str] = ..., cloud: _Optional[str] = ..., region: _Optional[str] = ..., accelerator: _Optional[str] = ..., accelerator_count: _Optional[int] = ..., price_class: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantRef, _Mapping]]] = ..., max_concurrency: _Optional[int] = ...) -> None: ...
