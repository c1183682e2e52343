"""The listener Lua's checks of a caller's headers (``services.xds.lua`` assembles them into
the listener script): one walk of the header map for every check, since each walk and each
``get`` is a call from Lua into Envoy's map.

``read_headers(headers)`` walks the map once, to its end (Envoy refuses to change a map while
a walk is unfinished), and returns what every check needs:

- the metadata limits (``[security.limits]``, ``metadata_refusal``): as the Python edge
  applies them, its gRPC server refuses a header list over ``max_metadata_bytes``
  (RESOURCE_EXHAUSTED; HPACK's size, name + value + 32 per entry;
  ``services/security/transport.py``) and its tenant gate a call or stream carrying more
  custom entries than ``max_metadata_count`` (INVALID_ARGUMENT; not pseudo-headers,
  user-agent, te, content-type or grpc-*: ``services/security/tenants.py``). Envoy's own
  x-forwarded-proto and x-forwarded-client-cert (a caller's is dropped) are not the caller's;
  the x-request-id Envoy makes up when the caller sent none counts in the bytes (at most ~90
  of them) but not as an entry;
- the wire refusals (``native/rules.c`` ``sy_wire_refusal`` is the twin): what a backend's
  gRPC server resets the stream for in a caller's own metadata, which Envoy would take for
  the backend's failure (retried elsewhere, counted by outlier detection), in two kinds, as
  gRPC's core orders them (measured on the Python edge, hostile10): ``wire``, the first in the
  caller's order of what the core's parse refuses, an unknown grpc-encoding (UNIMPLEMENTED),
  a -bin value not base64 (INVALID_ARGUMENT) or an unreadable grpc-timeout
  (``timeout_first``: it came before any other), else no te: trailers, all before the
  metadata limits; ``own_wire``, what the Python edge serves, after them: a content-type not
  application/grpc (or none), a response's grpc-status/-message/-status-details-bin, a
  grpc-previous-rpc-attempts not a count (INVALID_ARGUMENT);
- the first refused hint (``first_fault``, ``sy_first_fault``'s twin): the first entry, in the
  caller's order, that hints.py's parse refuses among those the listener reads: x-slo-ms
  (SLO_RANGE; a repeat must agree as a number), x-tenant (a repeat must agree) and a hint sent
  as -bin (its first 64 bytes quoted, as hints.py's ``_binary``); whether it is a -bin one and
  whether a hint only the Python edge reads (``SLOW_HINTS``, which it may refuse first) came
  before it. (A repeated x-request-id is joined by Envoy: README.)
- the values the request side reads by name (``:path``, ``grpc-timeout``, the tenant headers
  and the caller's certificate, ``SLOW_HINTS``), joined with "," when repeated as Envoy's
  ``get`` joins them, x-slo-ms's values in order, and the caller's own ``x-switchyard-*``
  headers the listener removes (only those sent: each removal is a lookup).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.edge.hints import HINTS, SLO_RANGE
from services.security import xfcc

TENANT_HEADERS = ("authorization", "x-tenant", "authorization-bin", "x-tenant-bin")


def _set(keys: Sequence[str]) -> str:
    return "{" + ", ".join(f'["{k}"] = true' for k in keys) + "}"


def header_checks(slow_hints: Sequence[str], own_headers: Sequence[str],
                  deadline_checked_paths: Sequence[str]) -> str:
    """The Lua chunk: ``read_headers``, ``metadata_refusal``, ``slo_ms``, ``cert_tenant``.
    It reads ``MAX_METADATA_BYTES``, ``MAX_METADATA_COUNT``, ``DEADLINE_MARGIN_MS`` and
    ``TENANT_SANS`` (the script's first lines) and ``lua_words.HINT_WORDS``' functions."""
    read = (":path", "grpc-timeout", xfcc.HEADER, *TENANT_HEADERS, *slow_hints)
    return rf"""
local SLO_LO, SLO_HI = {SLO_RANGE[0]!r}, {SLO_RANGE[1]!r}  -- x-slo-ms's range (hints.py)
-- a hint sent as a binary header: refused, never skipped (services/edge/hints.py's rule)
local BIN_HINTS = {{{", ".join(f'["{h}-bin"] = "{h}"' for h in sorted(HINTS))}}}
local SLOW_HINT = {_set(slow_hints)}
local READ = {_set(read)}
local OWN = {_set(own_headers)}
local LIMITED = MAX_METADATA_BYTES ~= nil or MAX_METADATA_COUNT ~= nil
local COUNTED_PATHS = {_set(deadline_checked_paths)}
local ENVOYS = {{["x-forwarded-proto"] = true, ["x-forwarded-client-cert"] = true}}
local NOT_COUNTED = {{["user-agent"] = true, ["te"] = true, ["content-type"] = true,
                     ["x-request-id"] = true}}
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

-- One entry's wire refusal that gRPC's core makes as it parses the headers (an unreadable
-- grpc-timeout is read_headers' timeout_first): nil, or a status code and message.
local function core_fault(key, value, r)
  if key == "te" then  -- Envoy keeps only te: trailers; gRPC needs it
    if value == "trailers" then r.te = true end
  elseif key == "grpc-encoding" then
    if ENCODINGS[value] then return nil end
    return 12, "grpc-encoding " .. printable(value) .. " is not supported: send identity, "
               .. "gzip or deflate"
  elseif not RESPONSE_ONLY[key] and #key > 4 and key:find("-bin", -4, true)
         and not is_base64(value) then
    return 3, "metadata " .. key:sub(1, 200) .. " is not base64, as a -bin header's value must be"
  end
  return nil
end

-- One entry's wire refusal the Python edge does not make (a backend would): nil, or a status
-- code and message.
local function own_fault(key, value, r)
  if key == "content-type" then
    if grpc_content_type(value) then r.typed = true; return nil end
    return 3, "content-type " .. printable(value) .. " is not gRPC's: send application/grpc"
  elseif RESPONSE_ONLY[key] then
    return 3, "metadata " .. key .. " is a response's; a call does not send it"
  elseif key == "grpc-previous-rpc-attempts" then
    if value:match("^%d%d?%d?%d?%d?%d?%d?%d?%d?$") then return nil end
    return 3, "metadata grpc-previous-rpc-attempts=" .. printable(value)
              .. " is not a count of attempts"
  end
  return nil
end

-- One entry's hint fault (first_fault's step): nil, or its INVALID_ARGUMENT message.
local function hint_fault(key, value, r)
  local hint = BIN_HINTS[key]
  if hint ~= nil then  -- hints.py's _binary: the value's first 64 bytes, quoted
    r.binary = true
    return "metadata " .. key .. "=" .. quoted(unbase64(value, 64)) .. ": " .. hint
           .. " is a text header; a binary one is not read as the hint"
  elseif SLOW_HINT[key] then
    r.unread = true
  elseif key == "x-slo-ms" then
    local v, why = decimal(value, SLO_LO, SLO_HI)
    local slo = r.slo
    slo[#slo + 1] = value
    if why ~= nil then return "metadata x-slo-ms=" .. quoted(value) .. ": " .. why end
    if r.slo_v == nil then r.slo_v = v
    elseif v ~= r.slo_v then return contradiction(key, value, slo[1]) end
  elseif key == "x-tenant" then
    if r.tenant == nil then r.tenant = value
    elseif value ~= r.tenant then return contradiction(key, value, r.tenant) end
  end
  return nil
end

-- Every check's reading of the caller's headers, in one walk (this module's docstring).
local function read_headers(headers)
  local r = {{size = 0, count = 0, typed = false, te = false, slo = {{}}, got = {{}}, own = {{}},
             binary = false, unread = false}}
  local got = r.got
  for key, value in pairs(headers) do
    if LIMITED and not ENVOYS[key] then
      r.size = r.size + #key + #value + 32
      if not NOT_COUNTED[key] and key:byte(1) ~= 58 and key:sub(1, 5) ~= "grpc-" then
        r.count = r.count + 1
      end
    end
    if r.wire == nil then
      if key == "grpc-timeout" then r.timeout_first = true end
      r.wire, r.wire_message = core_fault(key, value, r)
    elseif key == "te" and value == "trailers" then
      r.te = true
    end
    if r.own_wire == nil then r.own_wire, r.own_message = own_fault(key, value, r)
    elseif key == "content-type" and grpc_content_type(value) then
      r.typed = true
    end
    if r.fault == nil then
      r.fault = hint_fault(key, value, r)
      if r.fault ~= nil then r.after = r.unread end
    elseif key == "x-slo-ms" then
      r.slo[#r.slo + 1] = value
    end
    if READ[key] then got[key] = got[key] and (got[key] .. "," .. value) or value end
    if OWN[key] then r.own[key] = true end
  end
  if r.wire == nil and not r.te then
    r.wire, r.wire_message = 3, "a call without te: trailers is not gRPC: send te: trailers"
  end
  if r.own_wire == nil and not r.typed then
    r.own_wire, r.own_message = 3, "a call without a content-type is not gRPC: send "
                                   .. "application/grpc"
  end
  return r
end

-- [security.limits] on the caller's metadata, from read_headers: nil, or a status code and
-- message.
local function metadata_refusal(r, path)
  if MAX_METADATA_BYTES ~= nil and r.size > MAX_METADATA_BYTES then
    return 8, string.format("metadata of %d bytes is larger than max_metadata_bytes (%d vs. "
                            .. "%d)", r.size, r.size, MAX_METADATA_BYTES)
  end
  if MAX_METADATA_COUNT ~= nil and COUNTED_PATHS[path] and r.count > MAX_METADATA_COUNT then
    return 3, string.format("call carries %d metadata entries (limit %d)", r.count,
                            MAX_METADATA_COUNT)
  end
  return nil
end

-- The call's SLO in ms (the route uses it rounded down: never looser than asked); nil: the
-- model's default; false and a message: a bad x-slo-ms (as services/edge/hints.py words it).
-- values: x-slo-ms's, in the caller's order, as hints.py walks them (50, 60, abc is refused
-- at 60, a contradiction; abc, 50 at abc, not a number). Without x-slo-ms: the caller's
-- deadline (budget, ms) less the margin.
local function slo_ms(values, budget)
  if #values > 0 then
    local first = values[1]
    local slo, why = decimal(first, SLO_LO, SLO_HI)
    if why ~= nil then return false, "metadata x-slo-ms=" .. quoted(first) .. ": " .. why end
    for i = 2, #values do
      local v, bad = decimal(values[i], SLO_LO, SLO_HI)
      if bad ~= nil then return false, "metadata x-slo-ms=" .. quoted(values[i]) .. ": " .. bad end
      if v ~= slo then return false, contradiction("x-slo-ms", values[i], first) end
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

-- A caller's certificate, as Envoy forwards it (services/security/xfcc.py), that may name a
-- tenant: any tenant's client_san anywhere in the header (its SANs and subject). A superset
-- of the calls the slow path will identify as that tenant, so none is served anonymously on
-- the fast path; a false match only costs the slow path.
local function cert_tenant(got)
  if #TENANT_SANS == 0 then return false end
  local cert = got["{xfcc.HEADER}"]
  if cert == nil then return false end
  for _, san in ipairs(TENANT_SANS) do
    if cert:find(san, 1, true) ~= nil then return true end
  end
  return false
end
"""
