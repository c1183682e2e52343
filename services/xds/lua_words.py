"""InvalidHint's words in Lua: how the listener Lua (``services.xds.lua``) reads a hint's value
and quotes it, as ``services/edge/hints.py`` and ``placement.errors.InvalidHint`` do.

- ``decimal``: a plain decimal within a range, or ``"not a number"`` / ``"must be between"``;
- ``quoted``: Python's ``repr`` of a value's bytes read as UTF-8 (``decode("utf-8",
  "replace")``), escaping what ``str.isprintable`` refuses in ASCII and Latin-1;
- ``unbase64``: a ``-bin`` header's bytes as gRPC carries them;
- ``contradiction``: the words of a repeat that disagrees with the first.

``native/rules.c`` holds the C module's twins (``sy_hint_number``, ``py_repr``).
"""

from __future__ import annotations

import json


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal (``json.dumps`` escapes are Lua's for ASCII)."""
    return json.dumps(text)

HINT_WORDS = r"""
-- A hint's value as services/edge/hints.py reads it: a plain decimal (its _DECIMAL: an
-- optional sign, digits with at most one point, an optional exponent; no hex, spaces, inf or
-- nan, which tonumber would take) within [lo, hi], or nil and why not, in its words.
local function decimal(value, lo, hi)
  local body = value:gsub("^[+-]", "", 1)
  local mantissa = body:match("^([0-9.]+)[eE][+-]?[0-9]+$") or body:match("^([0-9.]+)$")
  if mantissa == nil or not (mantissa:match("^[0-9]+%.?[0-9]*$")
                             or mantissa:match("^%.[0-9]+$")) then
    return nil, "not a number"
  end
  local v = tonumber(body)
  if v == nil then return nil, "not a number" end
  if value:sub(1, 1) == "-" then v = -v end
  if v ~= v or v < lo or v > hi then
    return nil, string.format("must be between %g and %g", lo, hi)  -- Python's :g too
  end
  return v
end

-- The code points of ``s`` as Python's ``decode("utf-8", "replace")`` reads it: one U+FFFD
-- for each byte that starts no character and for each maximal cut-short prefix of one.
local function codepoints(s)
  local cps, i, n = {}, 1, #s
  while i <= n do
    local c, k, lo, hi = s:byte(i), 0, 0x80, 0xBF
    if c < 0x80 then k = -1
    elseif c >= 0xC2 and c <= 0xDF then k = 1
    elseif c >= 0xE0 and c <= 0xEF then
      k = 2
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      k = 3
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    end
    if k == -1 then cps[#cps + 1], i = c, i + 1
    elseif k == 0 then cps[#cps + 1], i = 0xFFFD, i + 1
    else
      local cp, j = c % (2 ^ (6 - k)), 1
      while j <= k do
        local d = s:byte(i + j)
        if d == nil or d < lo or d > hi then break end
        cp, lo, hi, j = cp * 64 + d % 64, 0x80, 0xBF, j + 1
      end
      if j <= k then cps[#cps + 1], i = 0xFFFD, i + j else cps[#cps + 1], i = cp, i + k + 1 end
    end
  end
  return cps
end

local function utf8_char(c)
  if c < 0x800 then return string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64) end
  if c < 0x10000 then
    return string.char(0xE0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64,
                       0x80 + c % 64)
  end
  return string.char(0xF0 + math.floor(c / 262144), 0x80 + math.floor(c / 4096) % 64,
                     0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
end

-- Python's repr of a header value (its bytes read as UTF-8, see codepoints), as InvalidHint
-- quotes it: double quotes when it holds a ' and no ", a backslash before the quote and
-- backslashes, \t \n \r, \xNN for control characters, Latin-1's unprintable ones (U+0080
-- to U+00A0, U+00AD) too; any other character as it is (Python escapes a few more that
-- str.isprintable refuses: U+2028, U+200B...; so does not this).
local function quoted(value)
  local cps = codepoints(value)
  local single, double = false, false
  for _, c in ipairs(cps) do
    if c == 39 then single = true elseif c == 34 then double = true end
  end
  local q = (single and not double) and 34 or 39
  local out = {string.char(q)}
  for _, c in ipairs(cps) do
    local s
    if c == q or c == 92 then s = "\\" .. string.char(c)
    elseif c == 9 then s = "\\t"
    elseif c == 10 then s = "\\n"
    elseif c == 13 then s = "\\r"
    elseif c < 32 or (c >= 127 and c <= 160) or c == 173 then s = string.format("\\x%02x", c)
    elseif c < 128 then s = string.char(c)
    else s = utf8_char(c) end
    out[#out + 1] = s
  end
  out[#out + 1] = string.char(q)
  return table.concat(out)
end

-- A -bin header's bytes as gRPC carries them (base64, padded or not), the first ``limit``.
local B64 = {}
for i = 1, 64 do
  B64[("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):byte(i)] = i - 1
end
local function unbase64(s, limit)
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = B64[s:byte(i)]
    if v ~= nil then
      bits, nbits = bits * 64 + v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        local b = math.floor(bits / 2 ^ nbits)
        bits = bits - b * 2 ^ nbits
        out[#out + 1] = string.char(b)
        if #out >= limit then break end
      end
    end
  end
  return table.concat(out)
end

-- InvalidHint's words for a repeat that disagrees with the first (hints.py's _once).
local function contradiction(key, value, first)
  return "metadata " .. key .. "=" .. quoted(value) .. ": contradicts an earlier " .. key .. "="
         .. quoted(first) .. "; send the hint once (or repeat the same value)"
end

"""
