"""The two Lua scripts placement pushes to Envoy edges.

``model_name_script`` runs on the listener (downstream). First, a call whose metadata is over
``[security.limits]`` is refused as a Python edge refuses it (``metadata_refusal``: over the
bytes RESOURCE_EXHAUSTED, over the custom entries INVALID_ARGUMENT). A ``ModelInfer`` or
``ModelStreamInfer`` whose caller has at most ``MIN_REMAINING_S`` (2 ms) of its deadline left
(its ``grpc-timeout``, whole ms as gRPC sends it, less the time its body took to arrive) is
answered DEADLINE_EXCEEDED there and forwarded nowhere, the Python edge's
``CallAttempts.check_time_left`` rule (Triton 2.51 can crash on calls cancelled just after they
arrive); a retry Envoy starts later in the call is not checked (its router knows no caller's
deadline, and one-variant orders run no upstream Lua). Such a call carrying a hint the
Python edge reads as a ``-bin`` header is INVALID_ARGUMENT (skipped, it would be served as if
the caller had sent no floor, region set, SLO or tenant; in hints.py's words, the value's first
64 bytes quoted as its ``_binary`` quotes them), and a ``ModelInfer`` over
``max_message_bytes`` RESOURCE_EXHAUSTED naming the limit. It first sends to the *slow path*
(the co-located Python edge, cluster ``slow-path``) what compiled config cannot express
exactly: the RPCs in ``SLOW_RPCS`` (a ``ModelStreamInfer`` cannot be body-peeked without
buffering the whole stream; the others answer for the mesh, not one deployment), the control
RPCs in ``CONTROL_RPCS`` (so they answer as a Python edge does), and a
``ModelInfer`` carrying one of ``SLOW_HINTS``; it does so by setting ``x-switchyard-path: slow``
(the route configuration's first route matches it) and touches no body. An Envoy without a
slow path refuses those calls (``UNIMPLEMENTED``, never served more loosely). Otherwise it turns
``x-slo-ms`` (read as ``services/edge/hints.py`` reads it, value by value in the caller's
order: a plain decimal in ``SLO_RANGE``, repeats agreeing as numbers, refused in its words,
percent-encoded as gRPC sends a message; a repeated ``x-tenant`` must agree too)
(or, without it, the call's deadline minus the margin) into whole milliseconds,
rounded down, in ``x-switchyard-slo-ms`` for the routes' SLO classes; then it walks the
top-level fields of the buffered request (skipping each by its wire type and length, never
copying tensor payloads) and sets ``x-switchyard-model`` to the *last* field-1 value, as a
protobuf parser would, then clears the route cache so routes can match the header. A caller's
own ``x-switchyard-model`` (and ``x-switchyard-path``) is always removed first. It is the Lua
twin of ``services.edge.wire.scan_model_name``; bytes it cannot read get a trailers-only gRPC
reply (INVALID_ARGUMENT); a compressed message, whose fields Lua cannot see, goes to the slow
path (without one: UNIMPLEMENTED). On the response of a fast-path ``ModelInfer`` that was
answered OK it adds the Python edge's ``x-cost-usd`` and ``x-slo-met`` trailers: the route
placement pushed carries, in its metadata under this filter's name, the per-call cost of each
deployment in its order, which of them meet the route's SLO, and (default route) the model's
default SLO; the call's own latency is measured from the buffered request to its response
trailers.

The variant rewrite is ``services.xds.rewrite``: the listener appends the first deployment's
variant once, and an *upstream* filter (so on every attempt) appends another only when the
deployment Envoy picked serves another variant. That deployment carries its variant in
endpoint metadata (``switchyard.variant``), which the ``header_mutation`` filter before it
copies into ``x-switchyard-variant`` (an aggregate cluster ignores its children's upstream
filters, so the variant cannot live in per-cluster filter config). Field 1 (``0x0a len
name``) is appended and the gRPC frame length fixed: the parser keeps the last value, so
Triton sees the variant (``services.edge.wire.rewrite_model_name``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from placement.attempts import GONE_HINT, MIN_REMAINING_S, TRITON_UNKNOWN_MODEL, VARIANT_GONE_ENDINGS
from services.edge.hints import HINTS, SLO_RANGE
from services.edge.wire import UNPARSEABLE
from services.security import xfcc
from services.xds.lua_words import HINT_WORDS

TenantCalls = Literal["off", "credential", "all"]

MODEL_HEADER = "x-switchyard-model"
VARIANT_HEADER = "x-switchyard-variant"
SLO_HEADER = "x-switchyard-slo-ms"
PATH_HEADER = "x-switchyard-path"  # "slow": the call goes to the co-located Python edge
# The trailer that names the path a call took: "envoy" (compiled config) or "slow".
PATH_TRAILER = "x-switchyard-path"
# Hints compiled config cannot express exactly: a ModelInfer carrying one takes the slow
# path (or, on an Envoy without one, is refused: UNIMPLEMENTED), never served more loosely.
SLOW_HINTS = ("x-min-quality", "x-max-cost-usd", "x-allowed-regions", "x-fail-fast",
              "x-routing-profile")
UNSUPPORTED_HINTS = SLOW_HINTS  # the name before the slow path existed
METADATA_NAMESPACE = "switchyard"
LISTENER_FILTER = "switchyard.model_name"  # route metadata for the listener Lua lives here
SERVICE_PATH = "/inference.GRPCInferenceService/"
INFER_PATH = SERVICE_PATH + "ModelInfer"
STREAM_PATH = SERVICE_PATH + "ModelStreamInfer"
# RPCs that start attempts at a backend: with at most MIN_REMAINING_S of the caller's deadline
# left, the listener answers DEADLINE_EXCEEDED itself and forwards nothing (the Python edge's
# CallAttempts.check_time_left rule; Triton 2.51 can crash on calls cancelled just after they
# arrive, triton-inference-server/server#7368); one carrying a hint as a -bin header is
# INVALID_ARGUMENT (services/edge/hints.py: a hint is never skipped).
DEADLINE_CHECKED_RPCS = ("ModelInfer", "ModelStreamInfer")
# RPCs always answered by the slow path: a stream (routed by its first message and pinned
# there by the Python edge), and what answers for the whole mesh rather than one deployment.
SLOW_RPCS = ("ModelStreamInfer", "RepositoryIndex", "ModelStatistics", "ServerMetadata")
# RPCs the slow path answers when there is one (the Python edge's contract exactly: readiness
# of the logical model over its serving deployments, metadata named with the logical name);
# an Envoy without one answers them from the deployment a call would reach.
CONTROL_RPCS = ("ModelReady", "ModelMetadata", "ModelConfig", "ServerLive", "ServerReady")
# RPCs whose request names the model in field 1, as ModelInfer does: routed and rewritten the
# same way (ModelReady("summarize") asks the deployment a call would go to).
NAMED_RPCS = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig")

def _lua_escape(text: str) -> str:
    """``text`` as a Lua pattern that matches it literally."""
    return "".join("%" + c if c in "^$()%.[]*+-?" else c for c in text)


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal (``json.dumps`` escapes are Lua's for ASCII)."""
    return json.dumps(text)


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

# Is ``s`` UTF-8 as Python's strict decoder reads it (no overlong forms, surrogates or code
# points past U+10FFFF)? The Python edge refuses a model name that is not.
_UTF8 = r"""
local function utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c, k = s:byte(i), 0
    if c >= 0xC2 and c <= 0xDF then k = 1
    elseif c >= 0xE0 and c <= 0xEF then k = 2
    elseif c >= 0xF0 and c <= 0xF4 then k = 3
    elseif c >= 0x80 then return false end
    if i + k > n then return false end
    for j = 1, k do
      local d = s:byte(i + j)
      if d < 0x80 or d > 0xBF then return false end
    end
    local d = s:byte(i + 1)
    if (c == 0xE0 and d < 0xA0) or (c == 0xED and d > 0x9F) or (c == 0xF0 and d < 0x90)
       or (c == 0xF4 and d > 0x8F) then
      return false
    end
    i = i + k + 1
  end
  return true
end
"""

_MODEL_NAME = _VARINT + _UTF8 + HINT_WORDS + rf"""
local NOT_PARSED = "request bytes do not parse as a KServe v2 request"
local COMPRESSED = "compressed"  -- model_name's code for a message its fields cannot be read in
local NAMED = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in NAMED_RPCS)}}}

-- The model name, or nil, a gRPC status code and a message.
local function model_name(body)
  local n = body:length()
  if n < 5 then return nil, 3, NOT_PARSED .. " (no gRPC message)" end
  local head = body:getBytes(0, 5)
  if head:byte(1) ~= 0 then
    return nil, COMPRESSED, "compressed requests are not routed by the Envoy edge; send them "
                            .. "uncompressed"
  end
  local stop = 5 + ((head:byte(2) * 256 + head:byte(3)) * 256 + head:byte(4)) * 256
               + head:byte(5)
  if MAX_MESSAGE_BYTES ~= nil and stop - 5 > MAX_MESSAGE_BYTES then
    return nil, 8, string.format("request of %d bytes is larger than max_message_bytes "
                                 .. "(%d vs. %d)", stop - 5, stop - 5, MAX_MESSAGE_BYTES)
  end
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
  if name:find("[\128-\255]") and not utf8(name) then
    return nil, 3, "model_name is not valid UTF-8"  -- services/edge/wire.py's words
  end
  return name
end

local SLOW_HINTS = {{{", ".join(f'"{h}"' for h in SLOW_HINTS)}}}
local SLOW_HINT = {{{", ".join(f'["{h}"] = true' for h in SLOW_HINTS)}}}
local SLOW_RPCS = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in SLOW_RPCS)}}}
local CONTROL_RPCS = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in CONTROL_RPCS)}}}
local UNITS = {{H = 3600000, M = 60000, S = 1000, m = 1, u = 0.001, n = 0.000001}}
local DEADLINE_CHECKED = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true'
                              for r in DEADLINE_CHECKED_RPCS)}}}
local MIN_REMAINING_MS = {MIN_REMAINING_S * 1000!r}
local SLO_LO, SLO_HI = {SLO_RANGE[0]!r}, {SLO_RANGE[1]!r}  -- x-slo-ms's range (hints.py)
-- a hint sent as a binary header: refused, never skipped (services/edge/hints.py's rule)
local BIN_HINTS = {{{", ".join(f'["{h}-bin"] = "{h}"' for h in sorted(HINTS))}}}

local function reply(handle, code, message)
  -- a trailers-only gRPC answer: the caller gets this status, never UNKNOWN, and its
  -- x-request-id (Envoy's, when the caller sent none), as every edge answer does; the
  -- message percent-encoded as gRPC sends it (else a caller's "5%20" would read "5 0")
  message = message:gsub("[%%%z\1-\31\127-\255]", function(c)
    return string.format("%%%02X", c:byte())
  end)
  handle:respond({{[":status"] = "200", ["content-type"] = "application/grpc",
                  ["grpc-status"] = tostring(code), ["grpc-message"] = message,
                  ["x-request-id"] = handle:headers():get("x-request-id") or ""}}, nil)
end

-- The caller's deadline (grpc-timeout) in ms, or nil.
local function deadline_ms(headers)
  local timeout = headers:get("grpc-timeout")
  if timeout == nil then return nil end
  local digits, unit = string.match(timeout, "^(%d+)([HMSmun])$")
  if digits == nil then return nil end
  return tonumber(digits) * UNITS[unit]
end

-- Is ``left_ms`` of the caller's deadline too little to start an attempt? gRPC sends the
-- deadline in whole ms rounded up, so a grpc-timeout of 2m may be less: it is too little,
-- as it is on the Python edge, whose clock has run on by the time it asks
-- (placement.attempts.CallAttempts.check_time_left).
local function too_little(left_ms)
  return left_ms <= MIN_REMAINING_MS
end

-- Nothing is forwarded: the caller gets DEADLINE_EXCEEDED from the listener.
local function too_late(handle, left_ms)
  reply(handle, 4, string.format("%.1f ms of the caller's deadline left (at most: gRPC sends "
                                 .. "it in whole ms), not more than the %g ms an attempt "
                                 .. "needs to start (placement.attempts.MIN_REMAINING_S): "
                                 .. "nothing was forwarded", left_ms, MIN_REMAINING_MS))
end

-- The first header entry, in the caller's order, that hints.py's parse refuses among those
-- the listener reads: x-slo-ms (SLO_RANGE; a repeat must agree as a number), x-tenant (a
-- repeat must agree) and a hint sent as -bin. nil, or its INVALID_ARGUMENT message, whether
-- it is a -bin one, and whether a hint only the Python edge reads (SLOW_HINTS, which it may
-- refuse first) came before it. (A repeated x-request-id is joined by Envoy: README.)
local function first_fault(headers)
  local slo, slo_v, tenant, unread = nil, nil, nil, false
  local fault, binary, after = nil, false, false
  -- walked to its end: Envoy refuses to change a header map while a walk is unfinished
  for key, value in pairs(headers) do
    local hint = BIN_HINTS[key]
    if fault ~= nil then  -- (the rest only finishes the walk)
    elseif hint ~= nil then  -- hints.py's _binary: the value's first 64 bytes, quoted
      fault, binary, after = "metadata " .. key .. "=" .. quoted(unbase64(value, 64)) .. ": "
                             .. hint .. " is a text header; a binary one is not read as the "
                             .. "hint", true, unread
    elseif SLOW_HINT[key] then
      unread = true
    elseif key == "x-slo-ms" then
      local v, why = decimal(value, SLO_LO, SLO_HI)
      if why ~= nil then fault, after = "metadata x-slo-ms=" .. quoted(value) .. ": " .. why, unread
      elseif slo == nil then slo, slo_v = value, v
      elseif v ~= slo_v then fault, after = contradiction(key, value, slo), unread end
    elseif key == "x-tenant" then
      if tenant == nil then tenant = value
      elseif value ~= tenant then fault, after = contradiction(key, value, tenant), unread end
    end
  end
  return fault, binary, after
end

-- The call's SLO in ms (the route uses it rounded down: never looser than asked); nil: the
-- model's default; false and a message: a bad x-slo-ms (as services/edge/hints.py words it).
-- Without x-slo-ms: the caller's deadline (budget, ms) less the margin.
local function slo_ms(headers, budget)
  local n = headers:getNumValues("x-slo-ms")
  if n > 0 then
    -- value by value in the caller's order, as hints.py walks them: 50, 60, abc is refused
    -- at 60 (a contradiction), abc, 50 at abc (not a number)
    local first = headers:getAtIndex("x-slo-ms", 0)
    local slo, why = decimal(first, SLO_LO, SLO_HI)
    if why ~= nil then return false, "metadata x-slo-ms=" .. quoted(first) .. ": " .. why end
    for i = 1, n - 1 do
      local value = headers:getAtIndex("x-slo-ms", i)
      local v, bad = decimal(value, SLO_LO, SLO_HI)
      if bad ~= nil then return false, "metadata x-slo-ms=" .. quoted(value) .. ": " .. bad end
      if v ~= slo then return false, contradiction("x-slo-ms", value, first) end
    end
    return slo
  end
  if budget ~= nil then
    local slo = budget - DEADLINE_MARGIN_MS
    if slo < 1 then slo = 1 end
    return slo
  end
  return nil
end

local function now_us(handle)
  return tonumber(handle:timestampString(EnvoyTimestampResolution.MICROSECOND))
end

-- To the slow path (the co-located Python edge) when this Envoy has one; else refused.
local function slow(handle, headers, why)
  if SLOW_PATH then
    headers:replace("{PATH_HEADER}", "slow")
    handle:clearRouteCache()
  else
    reply(handle, 12, why .. " needs the slow path, which this Envoy edge does not have; "
                      .. "call a Python edge for it")
  end
end

-- [security.limits] on the caller's metadata, as the Python edge applies them: its gRPC
-- server refuses a header list over max_metadata_bytes (RESOURCE_EXHAUSTED; HPACK's size,
-- name + value + 32 per entry; services/security/transport.py) and its tenant gate a call or
-- stream carrying more custom entries than max_metadata_count (INVALID_ARGUMENT; not
-- pseudo-headers, user-agent, te, content-type or grpc-*: services/security/tenants.py).
-- Envoy's own x-forwarded-proto and x-forwarded-client-cert (a caller's is dropped) are not
-- the caller's; the x-request-id Envoy makes up when the caller sent none counts in the bytes
-- (at most ~90 of them) but not as an entry. nil, or a status code and message.
local ENVOYS = {{["x-forwarded-proto"] = true, ["x-forwarded-client-cert"] = true}}
local NOT_COUNTED = {{["user-agent"] = true, ["te"] = true, ["content-type"] = true,
                     ["x-request-id"] = true}}
local function metadata_refusal(headers, path)
  if MAX_METADATA_BYTES == nil and MAX_METADATA_COUNT == nil then return nil end
  local size, count = 0, 0
  for key, value in pairs(headers) do
    if not ENVOYS[key] then size = size + #key + #value + 32 end
    if not (ENVOYS[key] or NOT_COUNTED[key]) and key:sub(1, 1) ~= ":"
       and key:sub(1, 5) ~= "grpc-" then
      count = count + 1
    end
  end
  if MAX_METADATA_BYTES ~= nil and size > MAX_METADATA_BYTES then
    return 8, string.format("metadata of %d bytes is larger than max_metadata_bytes (%d vs. "
                            .. "%d)", size, size, MAX_METADATA_BYTES)
  end
  if MAX_METADATA_COUNT ~= nil and DEADLINE_CHECKED[path] and count > MAX_METADATA_COUNT then
    return 3, string.format("call carries %d metadata entries (limit %d)", count,
                            MAX_METADATA_COUNT)
  end
  return nil
end

-- What a backend's gRPC server resets the stream for in a caller's own metadata (Envoy
-- would take the reset for the backend's failure: retried elsewhere, counted by outlier
-- detection; native/rules.c sy_wire_refusal is its twin): an unknown grpc-encoding
-- (UNIMPLEMENTED), a content-type not application/grpc (or none), a -bin value not base64,
-- a response's grpc-status/-message/-status-details-bin, a grpc-previous-rpc-attempts not a
-- count (INVALID_ARGUMENT).
local ENCODINGS = {{identity = true, gzip = true, deflate = true}}
local RESPONSE_ONLY = {{["grpc-status"] = true, ["grpc-message"] = true,
                       ["grpc-status-details-bin"] = true}}
local function printable(value)
  return (value:sub(1, 40):gsub("[^\32-\126]", "?"))
end
local function is_base64(value)
  local body, pad = value:match("^([A-Za-z0-9+/]*)(=?=?)$")
  if body == nil then return false end
  if #pad > 0 then return (#body + #pad) % 4 == 0 end
  return #body % 4 ~= 1
end
local function grpc_content_type(value)
  local rest = value:match("^application/grpc(.*)$")
  return rest ~= nil and (rest == "" or rest:sub(1, 1) == "+" or rest:sub(1, 1) == ";")
end
local function wire_refusal(headers)
  local code, message, typed = nil, nil, false
  -- walked to its end: Envoy refuses to change a header map while a walk is unfinished
  for key, value in pairs(headers) do
    if code ~= nil then
    elseif key == "content-type" then
      if grpc_content_type(value) then typed = true
      else
        code, message = 3, "content-type " .. printable(value) .. " is not gRPC's: send "
                           .. "application/grpc"
      end
    elseif key == "grpc-encoding" then
      if not ENCODINGS[value] then
        code, message = 12, "grpc-encoding " .. printable(value) .. " is not supported: send "
                            .. "identity, gzip or deflate"
      end
    elseif RESPONSE_ONLY[key] then
      code, message = 3, "metadata " .. key .. " is a response's; a call does not send it"
    elseif key == "grpc-previous-rpc-attempts" and not value:match("^%d%d?%d?%d?%d?%d?%d?%d?%d?$") then
      code, message = 3, "metadata grpc-previous-rpc-attempts=" .. printable(value)
                         .. " is not a count of attempts"
    elseif #key > 4 and key:sub(-4) == "-bin" and not is_base64(value) then
      code, message = 3, "metadata " .. key:sub(1, 200) .. " is not base64, as a -bin header's "
                         .. "value must be"
    end
  end
  if code == nil and not typed then
    code, message = 3, "a call without a content-type is not gRPC: send application/grpc"
  end
  return code, message
end

function envoy_on_request(handle)
  local headers = handle:headers()
  do
    local code, message = metadata_refusal(headers, headers:get(":path"))
    if code ~= nil then return reply(handle, code, message) end
    code, message = wire_refusal(headers)
    if code ~= nil then return reply(handle, code, message) end
  end
  headers:remove("{MODEL_HEADER}")
  headers:remove("{VARIANT_HEADER}")
  headers:remove("{SLO_HEADER}")
  headers:remove("{PATH_HEADER}")
  local path = headers:get(":path")
  -- the caller's deadline as it stands when its headers are in (the Python edge's clock
  -- starts there too); checked again once a ModelInfer's body is in
  local t0, budget = now_us(handle), deadline_ms(headers)
  -- A call or stream's first refused hint (first_fault). A -bin one is refused here, never
  -- skipped, before the slow path (unless a hint only the slow path reads came first: it
  -- answers in the caller's order); a ModelInfer's others once its bytes are checked, as
  -- the Python edge checks its size and bytes before its hints.
  local fault, binary, unread
  if DEADLINE_CHECKED[path] then
    if budget ~= nil and too_little(budget) then return too_late(handle, budget) end
    fault, binary, unread = first_fault(headers)
    if binary and path ~= "{INFER_PATH}" and not (unread and SLOW_PATH) then
      return reply(handle, 3, fault)
    end
  end
  if SLOW_RPCS[path] or (SLOW_PATH and CONTROL_RPCS[path]) then
    return slow(handle, headers, path)
  end
  if not NAMED[path] then return end
  if path == "{INFER_PATH}" then
    local why = nil
    if TENANTS == "all" or (TENANTS == "credential" and (headers:get("authorization") ~= nil
                                                          or headers:get("x-tenant") ~= nil
                                                          or headers:get("authorization-bin") ~= nil
                                                          or headers:get("x-tenant-bin") ~= nil
                                                          or cert_tenant(headers))) then
      why = "a tenant's call"  -- the Python edge admits tenants
    end
    for _, hint in ipairs(SLOW_HINTS) do
      if why == nil and headers:get(hint) ~= nil then why = "hint " .. hint end
    end
    if why ~= nil then
      -- without a slow path, a refused hint is refused here (INVALID_ARGUMENT, as Python)
      if fault ~= nil and not SLOW_PATH then return reply(handle, 3, fault) end
      return slow(handle, headers, why)
    end
  end
  local slo, why = slo_ms(headers, budget)
  if slo == false and path ~= "{INFER_PATH}" then
    reply(handle, 3, why)
    return
  end
  if slo == false then slo = nil end  -- the ModelInfer's fault, answered after its bytes
  if slo ~= nil then headers:replace("{SLO_HEADER}", string.format("%d", math.floor(slo))) end
  local body = handle:body()
  if body == nil then
    reply(handle, 3, NOT_PARSED .. " (no body)")
    return
  end
  local name, code, message = model_name(body)
  if name == nil and code == COMPRESSED and SLOW_PATH then
    -- the Python edge decompresses it and routes it by every rule (the body is sent on as
    -- the caller sent it); without a slow path, UNIMPLEMENTED
    return slow(handle, handle:headers(), "a compressed request")
  end
  if name == nil then
    reply(handle, code == COMPRESSED and 12 or code, message)
    return
  end
  if fault ~= nil then
    reply(handle, 3, fault)
    return
  end
  -- A name no header can carry (a NUL, CR or LF: Envoy would cut it there, "summarize\0x"
  -- routed as summarize) names no model: no header, so the unknown-model route answers
  -- NOT_FOUND, as a Python edge does.
  if name:find("[%z\r\n]") then
    handle:clearRouteCache()
    return
  end
  -- wrappers do not survive the yield inside body(): fetch the headers again
  handle:headers():replace("{MODEL_HEADER}", name)
  handle:clearRouteCache()
  if path == "{INFER_PATH}" then
    local now = now_us(handle)
    if budget ~= nil and too_little(budget - (now - t0) / 1000) then
      return too_late(handle, budget - (now - t0) / 1000)
    end
    -- for the response's x-slo-met: when the call started (its body is in), its own SLO
    local info = handle:streamInfo():dynamicMetadata()
    info:set("{METADATA_NAMESPACE}", "t0_us", now)
    if slo ~= nil then info:set("{METADATA_NAMESPACE}", "slo_ms", slo) end
  end
end

-- A fast-path ModelInfer answered OK: its cost and whether it met its SLO, as trailers.
-- (benchmarks/envoy_configs.py cuts the script here.) A trailers-only answer (an error)
-- carries the path in its headers, which are its trailers (the upstream filters add it to
-- answers that have trailers).
-- A backend's NOT_FOUND for the variant it was sent (placement.attempts.VARIANT_GONE_PATTERN)
-- after every retry: the caller's model exists, the table is behind. UNAVAILABLE, saying
-- why, as the Python edge answers (services/edge/router.py caller_code).
local GONE_PATTERNS = {{{", ".join(_lua_string("^" + _lua_escape(TRITON_UNKNOWN_MODEL)
                                            + "[^']*' " + _lua_escape(e) + "$")
                                for e in VARIANT_GONE_ENDINGS)}}}
local function variant_gone(headers)
  local message = headers:get("grpc-message")
  if message == nil then return end
  for _, pattern in ipairs(GONE_PATTERNS) do
    if message:find(pattern) then
      headers:replace("grpc-status", "14")
      headers:replace("grpc-message", message .. {_lua_string(GONE_HINT)})
      return
    end
  end
end

-- Triton's INTERNAL for request bytes whose tensors do not parse (the model name did): the
-- caller's error, INVALID_ARGUMENT as the Python edge answers it (services/edge/router.py).
local UNPARSEABLE = {_lua_string("^" + _lua_escape(UNPARSEABLE))}
local function unparseable(headers)
  local message = headers:get("grpc-message")
  if message ~= nil and message:find(UNPARSEABLE) then
    headers:replace("grpc-status", "3")
    headers:replace("grpc-message", "request bytes do not parse as a ModelInferRequest (the "
                                    .. "deployment answered: " .. message .. ")")
  end
end

function envoy_on_response(handle)
  local route = handle:metadata()
  local path = route:get("path")
  if path ~= nil then
    local headers = handle:headers()
    local status = headers:get("grpc-status")
    if status ~= nil then
      if status == "5" then variant_gone(headers) end
      if status == "13" then unparseable(headers) end
      headers:replace("{PATH_TRAILER}", path)
      return
    end
  end
  local cost = route:get("cost")
  if cost == nil then return end  -- not a model route (the slow path, a local reply...)
  local call = handle:streamInfo():dynamicMetadata():get("{METADATA_NAMESPACE}")
  if call == nil or call["t0_us"] == nil then return end  -- not a ModelInfer
  -- read before trailers(): wrappers do not survive its yield
  local slo = call["slo_ms"] or route:get("slo_ms")
  local feasible = route:get("feasible")
  local trailers = handle:trailers()
  if trailers ~= nil and trailers:get("grpc-status") == "13" then unparseable(trailers) end
  if trailers == nil or trailers:get("grpc-status") ~= "0" then return end
  local served = trailers:get("x-served-by")
  if served == nil or cost[served] == nil then return end
  local took_ms = (now_us(handle) - call["t0_us"]) / 1000
  local met = feasible ~= nil and feasible[served] ~= nil and slo ~= nil and took_ms <= slo
  trailers:add("x-cost-usd", cost[served])
  trailers:add("x-slo-met", met and "true" or "false")
end
"""


def model_name_script(deadline_margin_ms: float, slow_path: bool = False,
                      tenants: TenantCalls = "off",
                      max_message_bytes: int | None = None,
                      tenant_sans: Sequence[str] = (),
                      max_metadata_bytes: int | None = None,
                      max_metadata_count: int | None = None) -> str:
    """The listener's Lua: slow-path calls sent there (or, without a slow path, refused),
    SLO class header set, model name read; the fast path's cost and SLO trailers.
    ``tenants``: which ModelInfer calls go to the slow path for the tenant gate (``off``:
    none; ``credential``: those carrying ``authorization`` or ``x-tenant`` (or either as
    ``-bin``, which the slow path refuses: never served as no tenant), or a client
    certificate, as Envoy forwards it, that may name one of ``tenant_sans``; ``all``).
    ``max_message_bytes``: a ModelInfer whose message is larger is RESOURCE_EXHAUSTED,
    naming the limit, as on the Python edge (Envoy's buffer has headroom above it).
    ``max_metadata_bytes``, ``max_metadata_count``: ``[security.limits]`` on the caller's
    metadata (``metadata_refusal``; None: not checked)."""
    def limit(n: int | None) -> str:
        return "nil" if n is None else str(int(n))

    return (f"local DEADLINE_MARGIN_MS = {float(deadline_margin_ms)!r}\n"
            f"local MAX_MESSAGE_BYTES = {limit(max_message_bytes)}\n"
            f"local MAX_METADATA_BYTES = {limit(max_metadata_bytes)}\n"
            f"local MAX_METADATA_COUNT = {limit(max_metadata_count)}\n"
            f"local SLOW_PATH = {'true' if slow_path else 'false'}\n"
            f"local TENANTS = {json.dumps(tenants)}\n"
            f"local TENANT_SANS = {{{', '.join(_lua_string(n) for n in tenant_sans)}}}\n"
            + _CERT_TENANT + _MODEL_NAME)


# A caller's certificate, as Envoy forwards it (services/security/xfcc.py), that may name a
# tenant: any tenant's client_san anywhere in the header (its SANs and subject). A superset
# of the calls the slow path will identify as that tenant, so none is served anonymously on
# the fast path; a false match only costs the slow path.
_CERT_TENANT = f"""
local function cert_tenant(headers)
  if #TENANT_SANS == 0 then return false end
  local cert = headers:get("{xfcc.HEADER}")
  if cert == nil then return false end
  for _, san in ipairs(TENANT_SANS) do
    if cert:find(san, 1, true) ~= nil then return true end
  end
  return false
end
"""

