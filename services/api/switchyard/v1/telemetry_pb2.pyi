from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TelemetrySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TELEMETRY_SOURCE_UNSPECIFIED: _ClassVar[TelemetrySource]
    TELEMETRY_SOURCE_NVML: _ClassVar[TelemetrySource]
    TELEMETRY_SOURCE_SIMULATED: _ClassVar[TelemetrySource]
TELEMETRY_SOURCE_UNSPECIFIED: TelemetrySource
TELEMETRY_SOURCE_NVML: TelemetrySource
TELEMETRY_SOURCE_SIMULATED: TelemetrySource

class GpuReading(_message.Message):
    __slots__ = ("index", "uuid", "name", "gpu_util_pct", "mem_util_pct", "mem_used_bytes", "mem_free_bytes", "mem_total_bytes", "power_w", "power_limit_w", "temperature_c", "temperature_slowdown_c", "sm_clock_mhz", "sm_clock_max_mhz", "throttle_reasons", "ecc_uncorrected_volatile", "ecc_corrected_volatile", "xid_events", "lost")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_SLOWDOWN_C_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MAX_MHZ_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_VOLATILE_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_VOLATILE_FIELD_NUMBER: _ClassVar[int]
    XID_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    gpu_util_pct: float
    mem_util_pct: float
    mem_used_bytes: int
    mem_free_bytes: int
    mem_total_bytes: int
    power_w: float
    power_limit_w: float
    temperature_c: float
    temperature_slowdown_c: float
    sm_clock_mhz: int
    sm_clock_max_mhz: int
    throttle_reasons: int
    ecc_uncorrected_volatile: int
    ecc_corrected_volatile: int
    xid_events: _containers.RepeatedScalarFieldContainer[int]
    lost: bool
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., gpu_util_pct: _Optional[float] = ..., mem_util_pct: _Optional[float] = ..., mem_used_bytes: _Optional[int] = ..., mem_free_bytes: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., power_w: _Optional[float] = ..., power_limit_w: _Optional[float] = ..., temperature_c: _Optional[float] = ..., temperature_slowdown_c: _Optional[float] = ..., sm_clock_mhz: _Optional[int] = ..., sm_clock_max_mhz: _Optional[int] = ..., throttle_reasons: _Optional[int] = ..., ecc_uncorrected_volatile: _Optional[int] = ..., ecc_corrected_volatile: _Optional[int] = ..., xid_events: _Optional[_Iterable[int]] = ..., lost: _Optional[bool] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("variant", "inference_count", "execution_count", "success_count", "failure_count", "queue_ns", "compute_infer_ns", "compute_input_ns", "compute_output_ns", "ready")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_INFER_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_INPUT_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_OUTPUT_NS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    variant: str
    inference_count: int
    execution_count: int
    success_count: int
    failure_count: int
    queue_ns: int
    compute_infer_ns: int
    compute_input_ns: int
    compute_output_ns: int
    ready: bool
    def __init__(self, variant: _Optional[str] = ..., inference_count: _Optional[int] = ..., execution_count: _Optional[int] = ..., success_count: _Optional[int] = ..., failure_count: _Optional[int] = ..., queue_ns: _Optional[int] = ..., compute_infer_ns: _Optional[int] = ..., compute_input_ns: _Optional[int] = ..., compute_output_ns: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...

class TelemetryReport(_message.Message):
    __slots__ = ("backend_id", "agent_id", "source", "unix_ms", "gpus", "models", "backend_ready", "inflight", "more")
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_READY_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    agent_id: str
    source: TelemetrySource
    unix_ms: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuReading]
    models: _containers.RepeatedCompositeFieldContainer[ModelStats]
    backend_ready: bool
    inflight: int
    more: _containers.RepeatedCompositeFieldContainer[TelemetryReport]
    def __init__(self, backend_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., source: _Optional[_Union[TelemetrySource, str]] = ..., unix_ms: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuReading, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelStats, _Mapping]]] = ..., backend_ready: _Optional[bool] = ..., inflight: _Optional[int] = ..., more: _Optional[_Iterable[_Union[TelemetryReport, _Mapping]]] = ...) -> None: ...

class TelemetryAck(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    message: str
    def __init__(self, accepted: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("deployment_id", "edge_region", "samples", "failures", "p50_ms", "p95_ms", "rtt_ms", "calls_per_s", "streams")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_S_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    edge_region: str
    samples: int
    failures: int
    p50_ms: float
    p95_ms: float
    rtt_ms: float
    calls_per_s: float
    streams: StreamObservation
    def __init__(self, deployment_id: _Optional[str] = ..., edge_region: _Optional[str] = ..., samples: _Optional[int] = ..., failures: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., calls_per_s: _Optional[float] = ..., streams: _Optional[_Union[StreamObservation, _Mapping]] = ...) -> None: ...

class StreamObservation(_message.Message):
    __slots__ = ("prefill_ms_per_token", "tpot_base_ms", "tpot_per_stream_ms", "weight", "attempts", "tokens_in", "tokens_out", "input_usd", "output_usd")
    PREFILL_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TPOT_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_PER_STREAM_MS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_FIELD_NUMBER: _ClassVar[int]
    prefill_ms_per_token: float
    tpot_base_ms: float
    tpot_per_stream_ms: float
    weight: float
    attempts: int
    tokens_in: int
    tokens_out: int
    input_usd: float
    output_usd: float
    def __init__(self, prefill_ms_per_token: _Optional[float] = ..., tpot_base_ms: _Optional[float] = ..., tpot_per_stream_ms: _Optional[float] = ..., weight: _Optional[float] = ..., attempts: _Optional[int] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., input_usd: _Optional[float] = ..., output_usd: _Optional[float] = ...) -> None: ...

class ObservationReport(_message.Message):
    __slots__ = ("edge_id", "edge_region", "observations")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    edge_region: str
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    def __init__(self, edge_id: _Optional[str] = ..., edge_region: _Optional[str] = ..., observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ...) -> None: ...

class ObservationAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
