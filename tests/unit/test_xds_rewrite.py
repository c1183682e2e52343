"""The variant appended once by the listener Lua, the upstream Lua only for another variant
(services/xds/rewrite.py). The scripts run inside Envoy in tests/integration; here: where the
append goes and what the upstream script compares."""

from __future__ import annotations

import pytest

from services.xds import lua, rewrite


def _request_function(script: str) -> str:
    return script.split("function envoy_on_request(handle)", 1)[1]


def test_the_append_comes_after_the_name_is_read_and_the_route_cache_cleared() -> None:
    script = rewrite.listener_script(lua.model_name_script(5.0))
    body = _request_function(script)
    read = body.index("model_name(body)")
    cleared = body.index("handle:clearRouteCache()", read)
    append = body.index(f'get("{rewrite.FIRST_VARIANT_KEY}")')
    assert read < cleared < append
    assert "append_name(body, first)" in body[append:]


def test_a_callers_own_named_header_is_removed_before_anything_else() -> None:
    script = rewrite.listener_script(lua.model_name_script(5.0))
    body = _request_function(script)
    # the walk marks each caller's own header it finds (lua_checks' OWN), then each is removed
    own = next(line for line in script.splitlines() if line.startswith("local OWN = "))
    assert f'["{rewrite.NAMED_HEADER}"] = true' in own
    removed = body.index("for key in pairs(r.own) do headers:remove(key) end")
    assert removed < body.index("handle:body()")


def test_a_listener_script_without_the_body_read_is_refused_not_patched_blindly() -> None:
    with pytest.raises(ValueError, match=r"rewrite\.py must follow it"):
        rewrite.listener_script("function envoy_on_request(handle) end")


def test_upstream_the_body_is_touched_only_for_a_variant_it_does_not_name_yet() -> None:
    body = _request_function(rewrite.VARIANT_REWRITE)
    named = body.index(f'headers:get("{rewrite.NAMED_HEADER}")')
    compare = body.index("variant == named then return end")
    assert named < compare < body.index("handle:body()")
    # neither internal header reaches the backend
    assert f'headers:remove("{rewrite.NAMED_HEADER}")' in body
    assert f'headers:remove("{lua.VARIANT_HEADER}")' in body
