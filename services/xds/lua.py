"""The two Lua scripts placement pushes to Envoy edges.

``model_name_script`` runs on the listener (downstream). For a unary ``ModelInfer`` it first
refuses hints Envoy cannot honour yet (``UNIMPLEMENTED``, never served more loosely), turns
``x-slo-ms`` (or, without it, the call's deadline minus the margin) into whole milliseconds,
rounded down, in ``x-switchyard-slo-ms`` for the routes' SLO classes; then it walks the
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
SLO_HEADER = "x-switchyard-slo-ms"
# Hints the Envoy edge cannot honour yet: a call carrying one is refused (UNIMPLEMENTED),
# never served more loosely than it asked.
UNSUPPORTED_HINTS = ("x-min-quality", "x-max-cost-usd", "x-allowed-regions", "x-fail-fast",
                     "x-routing-profile")
METADATA_NAMESPACE = "switchyard"
SERVICE_PATH = "/inference.GRPCInferenceService/"
INFER_PATH = SERVICE_PATH + "ModelInfer"
# RPCs whose request names the model in field 1, as ModelInfer does: routed and rewritten the
# same way (ModelReady("summarize") asks the deployment a call would go to).
NAMED_RPCS = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig")

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

_MODEL_NAME = _VARINT + rf"""
local NOT_PARSED = "request bytes do not parse as a KServe v2 request"
local NAMED = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in NAMED_RPCS)}}}

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
    return nil, 3, "the request's model name is empty; set the model to call"
  end
  if #name > 1024 then return nil, 3, "model_name is longer than 1024 bytes" end
  return name
end

local UNSUPPORTED = {{{", ".join(f'"{h}"' for h in UNSUPPORTED_HINTS)}}}
local UNITS = {{H = 3600000, M = 60000, S = 1000, m = 1, u = 0.001, n = 0.000001}}

local function reply(handle, code, message)
  -- a trailers-only gRPC answer: the caller gets this status, never UNKNOWN
  handle:respond({{[":status"] = "200", ["content-type"] = "application/grpc",
                  ["grpc-status"] = tostring(code), ["grpc-message"] = message}}, nil)
end

-- The call's SLO in whole ms, rounded down (never looser than asked); nil: the model's
-- default; false and a message: a bad x-slo-ms (as services/edge/hints.py words it).
local function slo_ms(headers)
  local n = headers:getNumValues("x-slo-ms")
  if n > 0 then
    local first = headers:getAtIndex("x-slo-ms", 0)
    for i = 1, n - 1 do
      local other = headers:getAtIndex("x-slo-ms", i)
      if other ~= first then
        return false, "metadata x-slo-ms='" .. first .. "': repeated with a different value '"
                      .. other .. "'"
      end
    end
    local v = tonumber(first)
    if v == nil or v ~= v or v < 0.001 or v > 3600000 then
      return false, "metadata x-slo-ms='" .. first .. "': must be a number of milliseconds "
                    .. "within [0.001, 3600000]"
    end
    return math.floor(v)
  end
  local timeout = headers:get("grpc-timeout")
  if timeout ~= nil then
    local digits, unit = string.match(timeout, "^(%d+)([HMSmun])$")
    if digits ~= nil then
      local slo = tonumber(digits) * UNITS[unit] - DEADLINE_MARGIN_MS
      if slo < 1 then slo = 1 end
      return math.floor(slo)
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("{MODEL_HEADER}")
  headers:remove("{VARIANT_HEADER}")
  headers:remove("{SLO_HEADER}")
  local path = headers:get(":path")
  if not NAMED[path] then return end
  for _, hint in ipairs(UNSUPPORTED) do
    if path == "{INFER_PATH}" and headers:get(hint) ~= nil then
      reply(handle, 12, "hint " .. hint .. " is not supported by the Envoy edge yet; "
                        .. "call a Python edge for it")
      return
    end
  end
  local slo, why = slo_ms(headers)
  if slo == false then
    reply(handle, 3, why)
    return
  end
  if slo ~= nil then headers:replace("{SLO_HEADER}", string.format("%d", slo)) end
  local body = handle:body()
  if body == nil then
    reply(handle, 3, NOT_PARSED .. " (no body)")
    return
  end
  local name, code, message = model_name(body)
  if name == nil then
    reply(handle, code, message)
    return
  end
  -- wrappers do not survive the yield inside body(): fetch the headers again
  handle:headers():replace("{MODEL_HEADER}", name)
  handle:clearRouteCache()
end
"""


def model_name_script(deadline_margin_ms: float) -> str:
    """The listener's Lua: hints checked, SLO class header set, model name read."""
    return f"local DEADLINE_MARGIN_MS = {float(deadline_margin_ms)!r}\n" + _MODEL_NAME


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
