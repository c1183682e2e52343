"""The listener Lua's response side (``services.xds.lua`` assembles it after the request side).

A fast-path ``ModelInfer`` answered OK gets the Python edge's ``x-cost-usd`` and ``x-slo-met``
trailers: the route placement pushed carries, in its metadata under the listener filter's
name, the per-call cost of each deployment in its order, which of them meet the route's SLO,
and (default route) the model's default SLO; the call's own latency is measured from the
buffered request to its response trailers. A backend's status is given as the Python edge
gives it: NOT_FOUND for the variant it was sent, after every retry, UNAVAILABLE with
``GONE_HINT``; INTERNAL for request bytes that do not parse, INVALID_ARGUMENT. A
trailers-only answer carries the path the call took.
"""

from __future__ import annotations

from placement.attempts import GONE_HINT, TRITON_UNKNOWN_MODEL, VARIANT_GONE_ENDINGS
from services.edge.wire import UNPARSEABLE
from services.xds.lua_words import lua_string as _lua_string


def _lua_escape(text: str) -> str:
    """``text`` as a Lua pattern that matches it literally."""
    return "".join("%" + c if c in "^$()%.[]*+-?" else c for c in text)


def response_script(metadata_namespace: str, path_trailer: str) -> str:
    """``envoy_on_response`` and its helpers; ``metadata_namespace``: where the request side
    left the call's start and SLO in dynamic metadata; ``path_trailer``: the trailer that
    names the path a call took."""
    return rf"""
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
      headers:replace("{path_trailer}", path)
      return
    end
  end
  local cost = route:get("cost")
  if cost == nil then return end  -- not a model route (the slow path, a local reply...)
  local call = handle:streamInfo():dynamicMetadata():get("{metadata_namespace}")
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
