"""The model name by Envoy's ``grpc_field_extraction`` filter: an alternative the per-filter
benchmark measures against the listener Lua's body walk (not what placement pushes).

``grpc_field_extraction`` parses the request with the KServe v2 descriptors (tritonclient's
``grpc_service.proto`` and ``model_config.proto``, shipped here as a ``FileDescriptorSet``)
and stores ``model_name`` in dynamic metadata
(``envoy.filters.http.grpc_field_extraction`` → ``model_name``, a list of one string).
Envoy picks the route before any filter runs, so something must clear the route cache once
the name is known: no filter without code does that for a gRPC body, hence a header-only Lua
after the extraction (hints, SLO class, copy of the name into ``x-switchyard-model``,
``clearRouteCache``), which never touches the body.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import descriptor_pb2

from services.xds import lua

NAMESPACE = "envoy.filters.http.grpc_field_extraction"
FIELD = "model_name"  # ModelInferRequest's field 1
NAME_FIELD = "name"  # field 1 of ModelReady/ModelMetadata/ModelConfig requests
_T = "type.googleapis.com/"
EXTRACTED_RPCS = {"ModelInfer": FIELD, "ModelReady": NAME_FIELD, "ModelMetadata": NAME_FIELD,
                  "ModelConfig": NAME_FIELD}
SERVICE = "inference.GRPCInferenceService"


def descriptor_set() -> bytes:
    """KServe v2's service and its dependency, as one serialized ``FileDescriptorSet``."""
    from tritonclient.grpc import service_pb2

    files: list[Any] = []
    seen: set[str] = set()

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files.append(proto)

    add(service_pb2.DESCRIPTOR)
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


def extraction_filter() -> dict[str, Any]:
    """The ``grpc_field_extraction`` HTTP filter for the named KServe RPCs."""
    return {"name": "switchyard.model_name_extraction", "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.grpc_field_extraction.v3"
                      ".GrpcFieldExtractionConfig",
        "descriptor_set": {"inline_bytes": base64.b64encode(descriptor_set()).decode()},
        "extractions_by_method": {
            f"{SERVICE}.{rpc}": {"request_field_extractions": {field: {}}}
            for rpc, field in EXTRACTED_RPCS.items()}}}


_BODY_PEEK_START = "  local body = handle:body()"
_BODY_PEEK_END = "  -- wrappers do not survive"
_FROM_METADATA = f"""  local md = handle:streamInfo():dynamicMetadata():get("{NAMESPACE}")
  local names = md and (md["{FIELD}"] or md["{NAME_FIELD}"])
  local name = names and names[#names]
  if name == nil or name == "" then
    reply(handle, 3, "the request's model name is empty; set the model to call")
    return
  end
"""


def hints_script(deadline_margin_ms: float) -> str:
    """The listener Lua with its body walk replaced by a read of the extracted name."""
    full = lua.model_name_script(deadline_margin_ms)
    start, end = full.index(_BODY_PEEK_START), full.index(_BODY_PEEK_END)
    return full[:start] + _FROM_METADATA + full[end:]


def model_name_filters(deadline_margin_ms: float) -> list[dict[str, Any]]:
    """Extraction, then the header-only Lua that routes on what it extracted."""
    return [extraction_filter(), {"name": "switchyard.model_name", "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": hints_script(deadline_margin_ms)}}}]


def model_matcher(model: str) -> dict[str, Any]:
    """A route's dynamic-metadata match on the extracted name."""
    return {"filter": NAMESPACE, "path": [{"key": FIELD}],
            "value": {"list_match": {"one_of": {"string_match": {"exact": model}}}}}
