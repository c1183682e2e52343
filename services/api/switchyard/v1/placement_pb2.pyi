from switchyard.v1 import fleet_pb2 as _fleet_pb2
from switchyard.v1 import telemetry_pb2 as _telemetry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AvailabilityScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVAILABILITY_SCOPE_UNSPECIFIED: _ClassVar[AvailabilityScope]
    AVAILABILITY_SCOPE_BACKEND: _ClassVar[AvailabilityScope]
    AVAILABILITY_SCOPE_REGION: _ClassVar[AvailabilityScope]
    AVAILABILITY_SCOPE_CLOUD: _ClassVar[AvailabilityScope]
AVAILABILITY_SCOPE_UNSPECIFIED: AvailabilityScope
AVAILABILITY_SCOPE_BACKEND: AvailabilityScope
AVAILABILITY_SCOPE_REGION: AvailabilityScope
AVAILABILITY_SCOPE_CLOUD: AvailabilityScope

class Candidate(_message.Message):
    __slots__ = ("deployment_id", "backend_id", "endpoint", "variant", "region", "cloud", "accelerator", "quality", "latency_p95_ms", "rtt_ms", "queue_ms", "compute_ms", "cost_usd", "spare_capacity", "observed", "dropped_reason", "availability", "penalty_reason", "concurrency", "edge_slots", "tokens")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    SPARE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_REASON_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    PENALTY_REASON_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    EDGE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    backend_id: str
    endpoint: str
    variant: str
    region: str
    cloud: str
    accelerator: str
    quality: float
    latency_p95_ms: float
    rtt_ms: float
    queue_ms: float
    compute_ms: float
    cost_usd: float
    spare_capacity: float
    observed: bool
    dropped_reason: str
    availability: _fleet_pb2.Availability
    penalty_reason: str
    concurrency: int
    edge_slots: float
    tokens: TokenSpeed
    def __init__(self, deployment_id: _Optional[str] = ..., backend_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., variant: _Optional[str] = ..., region: _Optional[str] = ..., cloud: _Optional[str] = ..., accelerator: _Optional[str] = ..., quality: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., spare_capacity: _Optional[float] = ..., observed: _Optional[bool] = ..., dropped_reason: _Optional[str] = ..., availability: _Optional[_Union[_fleet_pb2.Availability, str]] = ..., penalty_reason: _Optional[str] = ..., concurrency: _Optional[int] = ..., edge_slots: _Optional[float] = ..., tokens: _Optional[_Union[TokenSpeed, _Mapping]] = ...) -> None: ...

class TokenSpeed(_message.Message):
    __slots__ = ("prefill_ms_per_token", "tpot_base_ms", "tpot_per_stream_ms", "usd_per_1m_input", "usd_per_1m_output")
    PREFILL_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TPOT_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_PER_STREAM_MS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_1M_INPUT_FIELD_NUMBER: _ClassVar[int]
    USD_PER_1M_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    prefill_ms_per_token: float
    tpot_base_ms: float
    tpot_per_stream_ms: float
    usd_per_1m_input: float
    usd_per_1m_output: float
    def __init__(self, prefill_ms_per_token: _Optional[float] = ..., tpot_base_ms: _Optional[float] = ..., tpot_per_stream_ms: _Optional[float] = ..., usd_per_1m_input: _Optional[float] = ..., usd_per_1m_output: _Optional[float] = ...) -> None: ...

class RouteTable(_message.Message):
    __slots__ = ("model", "edge_region", "version", "default_slo_ms", "candidates")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SLO_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    model: str
    edge_region: str
    version: int
    default_slo_ms: float
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, model: _Optional[str] = ..., edge_region: _Optional[str] = ..., version: _Optional[int] = ..., default_slo_ms: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class WatchRoutesRequest(_message.Message):
    __slots__ = ("edge_id", "edge_region", "known_version")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    edge_region: str
    known_version: int
    def __init__(self, edge_id: _Optional[str] = ..., edge_region: _Optional[str] = ..., known_version: _Optional[int] = ...) -> None: ...

class TableDelta(_message.Message):
    __slots__ = ("model", "edge_region", "version", "default_slo_ms", "upserts", "removed_deployments")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SLO_MS_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    edge_region: str
    version: int
    default_slo_ms: float
    upserts: _containers.RepeatedCompositeFieldContainer[Candidate]
    removed_deployments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., edge_region: _Optional[str] = ..., version: _Optional[int] = ..., default_slo_ms: _Optional[float] = ..., upserts: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., removed_deployments: _Optional[_Iterable[str]] = ...) -> None: ...

class RouteUpdate(_message.Message):
    __slots__ = ("version", "snapshot", "tables", "removed_models", "placement_id", "deltas")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_MODELS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    version: int
    snapshot: bool
    tables: _containers.RepeatedCompositeFieldContainer[RouteTable]
    removed_models: _containers.RepeatedScalarFieldContainer[str]
    placement_id: str
    deltas: _containers.RepeatedCompositeFieldContainer[TableDelta]
    def __init__(self, version: _Optional[int] = ..., snapshot: _Optional[bool] = ..., tables: _Optional[_Iterable[_Union[RouteTable, _Mapping]]] = ..., removed_models: _Optional[_Iterable[str]] = ..., placement_id: _Optional[str] = ..., deltas: _Optional[_Iterable[_Union[TableDelta, _Mapping]]] = ...) -> None: ...

class RegisterBackendRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: _fleet_pb2.Backend
    def __init__(self, backend: _Optional[_Union[_fleet_pb2.Backend, _Mapping]] = ...) -> None: ...

class RegisterBackendResponse(_message.Message):
    __slots__ = ("backend_id", "version")
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    version: int
    def __init__(self, backend_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeregisterBackendRequest(_message.Message):
    __slots__ = ("backend_id",)
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    def __init__(self, backend_id: _Optional[str] = ...) -> None: ...

class DeregisterBackendResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "edge_region", "slo_ms", "min_quality", "max_cost_usd", "allowed_regions", "profile", "stream")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_REGIONS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    model: str
    edge_region: str
    slo_ms: float
    min_quality: float
    max_cost_usd: float
    allowed_regions: _containers.RepeatedScalarFieldContainer[str]
    profile: str
    stream: StreamAsk
    def __init__(self, model: _Optional[str] = ..., edge_region: _Optional[str] = ..., slo_ms: _Optional[float] = ..., min_quality: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., allowed_regions: _Optional[_Iterable[str]] = ..., profile: _Optional[str] = ..., stream: _Optional[_Union[StreamAsk, _Mapping]] = ...) -> None: ...

class StreamAsk(_message.Message):
    __slots__ = ("ttft_ms", "tpot_ms", "prompt_tokens", "max_tokens", "session_id")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tpot_ms: float
    prompt_tokens: int
    max_tokens: int
    session_id: str
    def __init__(self, ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class StreamOption(_message.Message):
    __slots__ = ("deployment_id", "ttft_ms", "tpot_ms", "cost_usd", "usd_per_1m_tokens", "feasible", "measured", "learned_from", "prefix_holder", "cache_hit_tokens", "load", "load_bound", "reason")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USD_PER_1M_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FROM_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HOLDER_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LOAD_BOUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    ttft_ms: float
    tpot_ms: float
    cost_usd: float
    usd_per_1m_tokens: float
    feasible: bool
    measured: bool
    learned_from: str
    prefix_holder: bool
    cache_hit_tokens: int
    load: int
    load_bound: int
    reason: str
    def __init__(self, deployment_id: _Optional[str] = ..., ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., usd_per_1m_tokens: _Optional[float] = ..., feasible: _Optional[bool] = ..., measured: _Optional[bool] = ..., learned_from: _Optional[str] = ..., prefix_holder: _Optional[bool] = ..., cache_hit_tokens: _Optional[int] = ..., load: _Optional[int] = ..., load_bound: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ExplainedCandidate(_message.Message):
    __slots__ = ("candidate", "feasible", "reason", "score")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    candidate: Candidate
    feasible: bool
    reason: str
    score: float
    def __init__(self, candidate: _Optional[_Union[Candidate, _Mapping]] = ..., feasible: _Optional[bool] = ..., reason: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "edge_region", "slo_ms", "candidates", "chosen_deployment_id", "slo_met", "summary", "profile", "spread_band", "stream_options")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SLO_MET_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SPREAD_BAND_FIELD_NUMBER: _ClassVar[int]
    STREAM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    edge_region: str
    slo_ms: float
    candidates: _containers.RepeatedCompositeFieldContainer[ExplainedCandidate]
    chosen_deployment_id: str
    slo_met: bool
    summary: str
    profile: str
    spread_band: _containers.RepeatedScalarFieldContainer[str]
    stream_options: _containers.RepeatedCompositeFieldContainer[StreamOption]
    def __init__(self, model: _Optional[str] = ..., edge_region: _Optional[str] = ..., slo_ms: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[ExplainedCandidate, _Mapping]]] = ..., chosen_deployment_id: _Optional[str] = ..., slo_met: _Optional[bool] = ..., summary: _Optional[str] = ..., profile: _Optional[str] = ..., spread_band: _Optional[_Iterable[str]] = ..., stream_options: _Optional[_Iterable[_Union[StreamOption, _Mapping]]] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackendStatus(_message.Message):
    __slots__ = ("backend", "availability", "healthy", "health_reason", "telemetry_source", "last_report_unix_ms", "gpus", "penalty_reason", "telemetry_owner", "telemetry_ignored")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PENALTY_REASON_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_OWNER_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_IGNORED_FIELD_NUMBER: _ClassVar[int]
    backend: _fleet_pb2.Backend
    availability: _fleet_pb2.Availability
    healthy: bool
    health_reason: str
    telemetry_source: _telemetry_pb2.TelemetrySource
    last_report_unix_ms: int
    gpus: _containers.RepeatedCompositeFieldContainer[_telemetry_pb2.GpuReading]
    penalty_reason: str
    telemetry_owner: str
    telemetry_ignored: int
    def __init__(self, backend: _Optional[_Union[_fleet_pb2.Backend, _Mapping]] = ..., availability: _Optional[_Union[_fleet_pb2.Availability, str]] = ..., healthy: _Optional[bool] = ..., health_reason: _Optional[str] = ..., telemetry_source: _Optional[_Union[_telemetry_pb2.TelemetrySource, str]] = ..., last_report_unix_ms: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[_telemetry_pb2.GpuReading, _Mapping]]] = ..., penalty_reason: _Optional[str] = ..., telemetry_owner: _Optional[str] = ..., telemetry_ignored: _Optional[int] = ...) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends", "regions", "version", "placement_id")
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[BackendStatus]
    regions: _containers.RepeatedCompositeFieldContainer[_fleet_pb2.Region]
    version: int
    placement_id: str
    def __init__(self, backends: _Optional[_Iterable[_Union[BackendStatus, _Mapping]]] = ..., regions: _Optional[_Iterable[_Union[_fleet_pb2.Region, _Mapping]]] = ..., version: _Optional[int] = ..., placement_id: _Optional[str] = ...) -> None: ...

class SetAvailabilityRequest(_message.Message):
    __slots__ = ("scope", "target", "availability")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    scope: AvailabilityScope
    target: str
    availability: _fleet_pb2.Availability
    def __init__(self, scope: _Optional[_Union[AvailabilityScope, str]] = ..., target: _Optional[str] = ..., availability: _Optional[_Union[_fleet_pb2.Availability, str]] = ...) -> None: ...

class SetAvailabilityResponse(_message.Message):
    __slots__ = ("backend_ids", "version")
    BACKEND_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    backend_ids: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, backend_ids: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class GetRouteTablesRequest(_message.Message):
    __slots__ = ("edge_region",)
    EDGE_REGION_FIELD_NUMBER: _ClassVar[int]
    edge_region: str
    def __init__(self, edge_region: _Optional[str] = ...) -> None: ...

class GetRouteTablesResponse(_message.Message):
    __slots__ = ("tables", "version")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[RouteTable]
    version: int
    def __init__(self, tables: _Optional[_Iterable[_Union[RouteTable, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class UpdatePricesRequest(_message.Message):
    __slots__ = ("prices", "replace")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[_fleet_pb2.Price]
    replace: bool
    def __init__(self, prices: _Optional[_Iterable[_Union[_fleet_pb2.Price, _Mapping]]] = ..., replace: _Optional[bool] = ...) -> None: ...

class UpdatePricesResponse(_message.Message):
    __slots__ = ("prices", "version")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    prices: int
    version: int
    def __init__(self, prices: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class LearnedStateRequest(_message.Message):
    __slots__ = ("formats", "placement_id")
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    formats: _containers.RepeatedScalarFieldContainer[int]
    placement_id: str
    def __init__(self, formats: _Optional[_Iterable[int]] = ..., placement_id: _Optional[str] = ...) -> None: ...

class LearnedState(_message.Message):
    __slots__ = ("format", "state", "placement_id")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    format: int
    state: bytes
    placement_id: str
    def __init__(self, format: _Optional[int] = ..., state: _Optional[bytes] = ..., placement_id: _Optional[str] = ...) -> None: ...
