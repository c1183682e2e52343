"""The listener Lua reads the caller's headers in one walk (services/xds/lua_checks.py): each
walk and each ``get`` is a call from Lua into Envoy's header map. The script runs inside a
real Envoy in tests/integration/test_envoy_edge.py (``lua``); here, what it asks Envoy for."""

from __future__ import annotations

from services.xds import lua, rewrite


def _script() -> str:
    return rewrite.listener_script(lua.model_name_script(
        5.0, True, "credential", 1 << 20, ("a.local",), 8192, 20))


def test_the_header_map_is_walked_once_for_every_check() -> None:
    """Before, ``wire_refusal``, ``first_fault`` and ``metadata_refusal`` each walked it."""
    assert _script().count("pairs(headers)") == 1


def test_the_request_side_asks_envoy_for_no_header_by_name_before_the_body() -> None:
    """Before: :path twice, grpc-timeout, x-slo-ms's values, the four tenant headers, the
    certificate and the five slow-path hints, each a ``get``."""
    request = _script().split("function envoy_on_request(handle)", 1)[1]
    before_body = request[:request.index("handle:body()")]
    assert "headers:get(" not in before_body
    assert "getAtIndex" not in before_body and "getNumValues" not in before_body


def test_every_internal_header_a_caller_could_forge_is_removed_when_sent() -> None:
    own = next(line for line in _script().splitlines() if line.startswith("local OWN = "))
    for header in (lua.MODEL_HEADER, lua.VARIANT_HEADER, lua.SLO_HEADER, lua.PATH_HEADER,
                   rewrite.NAMED_HEADER):
        assert f'["{header}"] = true' in own
