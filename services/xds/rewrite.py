"""The variant rewrite done once in the listener, not on every attempt upstream.

Measured (``python -m benchmarks.envoy_filters``): the upstream Lua that rewrites the model
name costs a body buffer, a copy of the message and a Lua coroutine on *every* attempt. Most
calls are answered by the first deployment of their route's failover order, so the listener's
Lua, which already holds the buffered body, appends that deployment's variant (field 1, the
parser keeps the last value) once, and says so in ``x-switchyard-named``; the upstream Lua then
touches the body only when the attempt's deployment serves another variant (a retry, or the
first deployment ejected), appending that one instead.

- ``FIRST_VARIANT_KEY``: the route metadata key (under the listener filter's name) placement
  fills with the variant of the first deployment of the route's order;
- ``ONE_VARIANT_KEY``: true when every deployment the route reaches serves that variant (no
  upstream rewrite then reads ``x-switchyard-named``; the C module sets none);
- ``listener_script(script)``: the listener Lua with the append after it read the name;
- ``VARIANT_REWRITE``: the upstream Lua, comparing with what the body already names.
"""

from __future__ import annotations

from services.xds import lua

NAMED_HEADER = lua.NAMED_HEADER  # the variant the request body already names last
FIRST_VARIANT_KEY = "first_variant"
ONE_VARIANT_KEY = "one_variant"  # route metadata: every deployment it reaches serves one variant
_ANCHOR = f'  handle:headers():replace("{lua.MODEL_HEADER}", name)\n  handle:clearRouteCache()\n'

_APPEND = r"""
local function encode_varint(n)
  local out = {}
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

-- Append field 1 = name to the buffered body's first gRPC message (the parser keeps the last
-- value); a later message is dropped, as gRPC reads a unary call's first (its prefix would
-- end up inside the first: Triton could not parse the call).
local function append_name(body, name)
  local n = body:length()
  if n < 5 then return false end
  local head = body:getBytes(0, 5)
  if head:byte(1) ~= 0 then return false end
  local first = ((head:byte(2) * 256 + head:byte(3)) * 256 + head:byte(4)) * 256 + head:byte(5)
  if 5 + first < n then n = 5 + first end
  local field = "\10" .. encode_varint(#name) .. name
  body:setBytes("\0" .. be32(n - 5 + #field) .. body:getBytes(5, n - 5) .. field)
  return true
end
"""

_NAME_FIRST = _ANCHOR + f"""  do
    local first = handle:metadata():get("{FIRST_VARIANT_KEY}")
    if first ~= nil and first ~= name and append_name(body, first) then
      handle:headers():replace("{NAMED_HEADER}", first)
    end
  end
"""


def listener_script(script: str) -> str:
    """``script`` (the listener Lua of ``lua.model_name_script``) with the first
    deployment's variant appended right after the model name is read and routed."""
    if _ANCHOR not in script or "local body = handle:body()" not in script:
        raise ValueError("the listener Lua no longer reads the body then clears the route "
                         "cache: services/xds/rewrite.py must follow it")
    head, tail = script.split(_ANCHOR, 1)  # (the listener removes a caller's NAMED_HEADER)
    return _APPEND + head + _NAME_FIRST + tail


VARIANT_REWRITE = _APPEND + f"""
function envoy_on_request(handle)
  local headers = handle:headers()
  local variant = headers:get("{lua.VARIANT_HEADER}")
  local named = headers:get("{NAMED_HEADER}") or headers:get("{lua.MODEL_HEADER}")
  headers:remove("{lua.VARIANT_HEADER}")
  headers:remove("{NAMED_HEADER}")
  if variant == nil or variant == "" or named == nil or variant == named then return end
  local body = handle:body()
  if body == nil then return end
  append_name(body, variant)
end
"""
