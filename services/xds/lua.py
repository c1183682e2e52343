"""The two Lua scripts placement pushes to Envoy edges.

``MODEL_NAME`` runs on the listener (downstream): for a unary ``ModelInfer`` it walks the
top-level fields of the buffered request (skipping each by its wire type and length, never
copying tensor payloads) and sets ``x-switchyard-model`` to the *last* field-1 value, as a
protobuf parser would, then clears the route cache so routes can match the header. A caller's
own ``x-switchyard-model`` is always removed first. It is the Lua twin of
``services.edge.wire.scan_model_name``; bytes it cannot read get a trailers-only gRPC reply
(INVALID_ARGUMENT, or UNIMPLEMENTED for a compressed message, whose fields Lua cannot see).

``VARIANT_REWRITE`` runs as an *upstream* filter, so on every attempt: the deployment Envoy
picked carries its variant in endpoint metadata (``switchyard.variant``), which the
``header_mutation`` filter before it copies into ``x-switchyard-variant`` (an aggregate cluster
ignores its children's upstream filters, so the variant cannot live in per-cluster filter
config). When the variant differs from the logical name, the script appends field 1
(``0x0a len name``) to the message and fixes the gRPC frame length: the parser keeps the last
value, so Triton sees the variant (``services.edge.wire.rewrite_model_name``).
"""

from __future__ import annotations

MODEL_HEADER = "x-switchyard-model"
VARIANT_HEADER = "x-switchyard-variant"
METADATA_NAMESPACE = "switchyard"
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"

_VARINT = r"""
local function varint(body, pos, stop)
  local k = stop - pos
  if k > 10 then k = 10 end
  if k <= 0 then return nil, pos end
  local bytes = body:getBytes(pos, k)
  local value, scale = 0, 1
  for i = 1, k do
    local b = bytes:byte(i)
    value = value + (b % 128) * scale
    if b < 128 then return value, pos + i end
    scale = scale * 128
  end
  return nil, pos
end
"""

MODEL_NAME = _VARINT + rf"""
local NOT_PARSED = "request bytes do not parse as a ModelInferRequest"

-- The model name, or nil, a gRPC status code and a message.
local function model_name(body)
  local n = body:length()
  if n < 5 then return nil, 3, NOT_PARSED .. " (no gRPC message)" end
  local head = body:getBytes(0, 5)
  if head:byte(1) ~= 0 then
    return nil, 12, "compressed requests are not routed by the Envoy edge; send them uncompressed"
  end
  local stop = 5 + ((head:byte(2) * 256 + head:byte(3)) * 256 + head:byte(4)) * 256
               + head:byte(5)
  if stop > n then return nil, 3, NOT_PARSED .. " (truncated gRPC message)" end
  local pos, name = 5, nil
  while pos < stop do
    local key
    key, pos = varint(body, pos, stop)
    if key == nil then return nil, 3, NOT_PARSED .. " (truncated varint)" end
    local field, wire = math.floor(key / 8), key % 8
    if field == 0 then return nil, 3, NOT_PARSED .. " (field number 0)" end
    if wire == 2 then
      local len
      len, pos = varint(body, pos, stop)
      if len == nil or pos + len > stop then
        return nil, 3, NOT_PARSED .. " (truncated field " .. field .. ")"
      end
      if field == 1 then name = body:getBytes(pos, len) end
      pos = pos + len
    elseif wire == 0 then
      local v
      v, pos = varint(body, pos, stop)
      if v == nil then return nil, 3, NOT_PARSED .. " (truncated varint)" end
    elseif wire == 1 then pos = pos + 8
    elseif wire == 5 then pos = pos + 4
    else return nil, 3, NOT_PARSED .. " (wire type " .. wire .. ")" end
  end
  if pos ~= stop then return nil, 3, NOT_PARSED .. " (truncated fixed-width field)" end
  if name == nil or name == "" then
    return nil, 3, "ModelInferRequest.model_name is empty; set the model to call"
  end
  if #name > 1024 then return nil, 3, "model_name is longer than 1024 bytes" end
  return name
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("{MODEL_HEADER}")
  headers:remove("{VARIANT_HEADER}")
  if headers:get(":path") ~= "{INFER_PATH}" then return end
  local body = handle:body()
  if body == nil then
    handle:respond({{[":status"] = "200", ["content-type"] = "application/grpc",
                    ["grpc-status"] = "3", ["grpc-message"] = NOT_PARSED .. " (no body)"}}, nil)
    return
  end
  local name, code, message = model_name(body)
  if name == nil then
    -- trailers-only gRPC reply: the caller gets this status, never UNKNOWN
    handle:respond({{[":status"] = "200", ["content-type"] = "application/grpc",
                    ["grpc-status"] = tostring(code), ["grpc-message"] = message}}, nil)
    return
  end
  -- wrappers do not survive the yield inside body(): fetch the headers again
  handle:headers():replace("{MODEL_HEADER}", name)
  handle:clearRouteCache()
end
"""

VARIANT_REWRITE = rf"""
local function encode_varint(n)
  local out = {{}}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end

local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local variant = headers:get("{VARIANT_HEADER}")
  local logical = headers:get("{MODEL_HEADER}")
  headers:remove("{VARIANT_HEADER}")
  if variant == nil or variant == "" or logical == nil or variant == logical then return end
  local body = handle:body()
  if body == nil then return end
  local n = body:length()
  if n < 5 or body:getBytes(0, 1):byte(1) ~= 0 then return end
  local field = "\10" .. encode_varint(#variant) .. variant
  body:setBytes("\0" .. be32(n - 5 + #field) .. body:getBytes(5, n - 5) .. field)
end
"""
