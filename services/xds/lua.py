"""The two Lua scripts placement pushes to Envoy edges.

This module holds the listener script's request side and assembles it: the checks of the
caller's headers, read in one walk of the header map, are ``services.xds.lua_checks``, the
response side ``services.xds.lua_response``, the hint words ``services.xds.lua_words``.

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

from placement.attempts import MIN_REMAINING_S
from services.edge.hints import REQUEST_ID_CHARS
from services.grpc_errors import MESSAGE_MAX_BYTES
from services.security.tenants import OPEN_RPCS
from services.xds.lua_checks import header_checks
from services.xds.lua_response import response_script
from services.xds.lua_words import HINT_WORDS, lua_string

TenantCalls = Literal["off", "credential", "all"]

MODEL_HEADER = "x-switchyard-model"
VARIANT_HEADER = "x-switchyard-variant"
SLO_HEADER = "x-switchyard-slo-ms"
PATH_HEADER = "x-switchyard-path"  # "slow": the call goes to the co-located Python edge
NAMED_HEADER = "x-switchyard-named"  # the variant the body already names last (rewrite.py)
# the caller's own x-switchyard-* headers the listener removes (those it sent)
OWN_HEADERS = (MODEL_HEADER, VARIANT_HEADER, SLO_HEADER, PATH_HEADER, NAMED_HEADER)
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
# gRPC's core refuses an unreadable grpc-timeout so (INTERNAL): the Python edge's caller's words
TIMEOUT_UNREADABLE = "Error parsing 'grpc-timeout' metadata"
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

_MODEL_NAME = _VARINT + _UTF8 + HINT_WORDS + header_checks(
    SLOW_HINTS, OWN_HEADERS, [SERVICE_PATH + r for r in DEADLINE_CHECKED_RPCS]) + rf"""
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
local SLOW_RPCS = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in SLOW_RPCS)}}}
local CONTROL_RPCS = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in CONTROL_RPCS)}}}
local OPEN_RPCS = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true' for r in sorted(OPEN_RPCS))}}}
local UNITS = {{H = 3600000, M = 60000, S = 1000, m = 1}}
local DEADLINE_CHECKED = {{{", ".join(f'["{SERVICE_PATH}{r}"] = true'
                              for r in DEADLINE_CHECKED_RPCS)}}}
local MIN_REMAINING_MS = {MIN_REMAINING_S * 1000!r}

-- ``message`` cut where its percent-encoding would pass MESSAGE_MAX_BYTES, as
-- services/grpc_errors.py's _capped cuts it (echoed whole, a 7,000-character hint value was a
-- trailer over the client's own limit: "Stream removed", the hint never named)
local function capped(message)
  local size, chars, start, cut = 0, 0, 1, nil
  for i = 1, #message do
    local b = message:byte(i)
    if b < 0x80 or b >= 0xC0 then
      chars = chars + 1  -- a character starts here (UTF-8)
      if cut == nil then start = i end
    end
    if b < 0x20 or b > 0x7e or b == 0x25 then size = size + 3 else size = size + 1 end
    if cut == nil and size > {MESSAGE_MAX_BYTES} then cut = start end
  end
  if cut == nil then return message end
  return message:sub(1, cut - 1) .. "... (" .. chars .. " characters)"
end

local function reply(handle, code, message)
  message = capped(message)
  -- a trailers-only gRPC answer: the caller gets this status, never UNKNOWN, and its
  -- x-request-id (Envoy's, when the caller sent none; its first REQUEST_ID_CHARS), as every
  -- edge answer does; the
  -- message percent-encoded as gRPC sends it (else a caller's "5%20" would read "5 0")
  message = message:gsub("[%%%z\1-\31\127-\255]", function(c)
    return string.format("%%%02X", c:byte())
  end)
  handle:respond({{[":status"] = "200", ["content-type"] = "application/grpc",
                  ["grpc-status"] = tostring(code), ["grpc-message"] = message,
                  ["x-request-id"] = (handle:headers():get("x-request-id") or "")
                                     :sub(1, {REQUEST_ID_CHARS})}}, nil)
end

-- The caller's deadline (its grpc-timeout, as read_headers got it) in ms; nil: none; false:
-- unreadable (refused, as gRPC refuses it). Read as gRPC's core reads it (ParseTimeout,
-- native/rules.c sy_grpc_timeout): spaces around, digits, one unit; n and u rounded up to
-- whole ms; over 1,000,000,000 no deadline, whatever follows the digits; of a repeat, the last.
local function one_deadline(timeout)
  local lead = timeout:match("^ *(%d+)")
  if lead ~= nil then
    local d = lead:gsub("^0+", "")
    if #d > 10 or (#d == 10 and d > "1000000000") then return nil end
  end
  local digits, unit = timeout:match("^ *(%d+) *([HMSmun]) *$")
  if digits == nil then return false end
  local x = tonumber(digits)
  if unit == "n" then return math.ceil(x / 1000000) end
  if unit == "u" then return math.ceil(x / 1000) end
  return x * UNITS[unit]
end
local function deadline_ms(timeout)
  if timeout == nil then return nil end
  -- a repeat comes joined "1S,50S": gRPC's core parses each and keeps the last
  local last
  for part in (timeout .. ","):gmatch("([^,]*),") do
    last = one_deadline(part)
    if last == false then return false end
  end
  return last
end
-- the caller's deadline as Envoy's router and the slow path's gRPC read it: at most 8 digits
local function for_envoy(ms)
  for _, u in ipairs({{{{"m", 1}}, {{"S", 1000}}, {{"M", 60000}}, {{"H", 3600000}}}}) do
    local v = math.ceil(ms / u[2])
    if v <= 99999999 then return string.format("%d%s", v, u[1]) end
  end
  return nil
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

function envoy_on_request(handle)
  local headers = handle:headers()
  local r = read_headers(headers)  -- one walk for every check (services/xds/lua_checks.py)
  local path = r.got[":path"]
  local budget = deadline_ms(r.got["grpc-timeout"])
  -- in gRPC's core's order (lua_checks.py): what its parse refuses, first in the caller's
  -- order (an unreadable grpc-timeout in gRPC's own words: the Python edge's server refuses
  -- it so; served here, the caller's deadline would be dropped), no te, the limits, the rest
  if budget == false and (r.wire == nil or r.timeout_first) then
    return reply(handle, 13, "{TIMEOUT_UNREADABLE}")
  end
  if r.wire ~= nil then return reply(handle, r.wire, r.wire_message) end
  do
    local code, message = metadata_refusal(r, path)
    if code ~= nil then return reply(handle, code, message) end
    if r.own_wire ~= nil then return reply(handle, r.own_wire, r.own_message) end
  end
  do
    local raw = r.got["grpc-timeout"]
    if raw ~= nil and budget == nil then headers:remove("grpc-timeout")
    elseif raw ~= nil and (raw:find("[, ]") or #raw > 9) then
      local canon = for_envoy(budget)
      if canon ~= nil then headers:replace("grpc-timeout", canon) end
    end
  end
  for key in pairs(r.own) do headers:remove(key) end
  -- the caller's deadline as it stands when its headers are in (the Python edge's clock
  -- starts there too); checked again once a ModelInfer's body is in
  local t0 = now_us(handle)
  -- A call or stream's first refused hint (read_headers' fault). A -bin one is refused here,
  -- never skipped, before the slow path (unless a hint only the slow path reads came first:
  -- it answers in the caller's order); a ModelInfer's others once its bytes are checked, as
  -- the Python edge checks its size and bytes before its hints.
  local fault
  if DEADLINE_CHECKED[path] then
    if budget ~= nil and too_little(budget) then return too_late(handle, budget) end
    fault = r.fault
    if r.binary and path ~= "{INFER_PATH}" and not (r.after and SLOW_PATH) then
      return reply(handle, 3, fault)
    end
  end
  -- with require_tenant a control RPC but the probes is the slow path's (its tenant gate):
  -- without one it is refused, never answered by a deployment to a caller with no credential
  if SLOW_RPCS[path] or (CONTROL_RPCS[path] and (SLOW_PATH or (TENANTS == "all"
                                                             and not OPEN_RPCS[path]))) then
    return slow(handle, headers, path)
  end
  if not NAMED[path] then return end
  if path == "{INFER_PATH}" then
    local why = nil
    local got = r.got
    if TENANTS == "all" or (TENANTS == "credential" and (got["authorization"] ~= nil
                                                          or got["x-tenant"] ~= nil
                                                          or got["authorization-bin"] ~= nil
                                                          or got["x-tenant-bin"] ~= nil
                                                          or cert_tenant(got))) then
      why = "a tenant's call"  -- the Python edge admits tenants
    end
    for _, hint in ipairs(SLOW_HINTS) do
      if why == nil and got[hint] ~= nil then why = "hint " .. hint end
    end
    if why ~= nil then
      -- without a slow path, a refused hint is refused here (INVALID_ARGUMENT, as Python)
      if fault ~= nil and not SLOW_PATH then return reply(handle, 3, fault) end
      return slow(handle, headers, why)
    end
  end
  local slo, why = slo_ms(r.slo, budget)
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
            f"local TENANT_SANS = {{{', '.join(lua_string(n) for n in tenant_sans)}}}\n"
            + _MODEL_NAME + response_script(METADATA_NAMESPACE, PATH_TRAILER))
