from switchyard.v1 import placement_pb2 as _placement_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeploymentHealth(_message.Message):
    __slots__ = ("deployment_id", "ejected", "ejected_for_s", "calls", "failures", "p95_ms")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FOR_S_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    ejected: bool
    ejected_for_s: float
    calls: int
    failures: int
    p95_ms: float
    def __init__(self, deployment_id: _Optional[str] = ..., ejected: _Optional[bool] = ..., ejected_for_s: _Optional[float] = ..., calls: _Optional[int] = ..., failures: _Optional[int] = ..., p95_ms: _Optional[float] = ...) -> None: ...

class EdgeStatusResponse(_message.Message):
    __slots__ = ("edge_id", "region", "routes_version", "placement_connected", "routes_source", "tables", "deployments")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    ROUTES_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    region: str
    routes_version: int
    placement_connected: bool
    routes_source: str
    tables: _containers.RepeatedCompositeFieldContainer[_placement_pb2.RouteTable]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentHealth]
    def __init__(self, edge_id: _Optional[str] = ..., region: _Optional[str] = ..., routes_version: _Optional[int] = ..., placement_connected: _Optional[bool] = ..., routes_source: _Optional[str] = ..., tables: _Optional[_Iterable[_Union[_placement_pb2.RouteTable, _Mapping]]] = ..., deployments: _Optional[_Iterable[_Union[DeploymentHealth, _Mapping]]] = ...) -> None: ...
