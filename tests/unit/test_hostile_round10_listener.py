"""Hostile round 10 at the module's listener (the fake Envoy host, tests/native): with
require_tenant, an Envoy without a slow path sent ModelReady, ModelMetadata and ModelConfig to
a deployment, answered to a caller without a credential (the slow path's tenant gate is what
refuses it). Now refused there, as a tenant's ModelInfer is (UNIMPLEMENTED, it needs the slow
path); the probes (tenants.OPEN_RPCS) still go to the deployment."""

from __future__ import annotations

import pytest

from services.security.tenants import OPEN_RPCS
from services.xds import lua, native
from tests.native.envoy_host import FakeEnvoyHost, build
from tests.unit.test_envoy_dynmod_parity import CONTINUE, STOP, _frame

NAMED_CONTROL = ("ModelReady", "ModelMetadata", "ModelConfig")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> FakeEnvoyHost:
    return FakeEnvoyHost(build(tmp_path_factory.mktemp("round10-listener")))


def config(tenants: lua.TenantCalls, slow_path: bool) -> str:
    value: str = native.listener_filter(5.0, slow_path, tenants=tenants)[
        "typed_config"]["filter_config"]["value"]
    return value


@pytest.mark.parametrize("rpc", NAMED_CONTROL)
def test_a_control_rpc_is_refused_without_a_slow_path_where_tenants_are_required(
        host: FakeEnvoyHost, rpc: str) -> None:
    """Fails on the old module: CONTINUE to the model's route, no reply."""
    assert host.new_config("listener", config("all", False))
    host.start({":path": lua.SERVICE_PATH + rpc}, _frame(b"\x0a\x01m"))
    assert host.request_headers() == STOP
    code, message = host.reply()
    assert code == 12 and message.startswith(lua.SERVICE_PATH + rpc), (code, message)
    assert "needs the slow path" in message


@pytest.mark.parametrize("rpc", sorted(OPEN_RPCS))
def test_the_probes_still_reach_a_deployment(host: FakeEnvoyHost, rpc: str) -> None:
    assert host.new_config("listener", config("all", False))
    host.start({":path": lua.SERVICE_PATH + rpc}, _frame(b""))
    host.request_headers()
    assert host.reply() is None and host.header(lua.PATH_HEADER) is None


@pytest.mark.parametrize("tenants", ["off", "credential"])
@pytest.mark.parametrize("rpc", NAMED_CONTROL)
def test_without_require_tenant_a_control_rpc_is_routed_as_before(
        host: FakeEnvoyHost, tenants: lua.TenantCalls, rpc: str) -> None:
    assert host.new_config("listener", config(tenants, False))
    host.start({":path": lua.SERVICE_PATH + rpc}, _frame(b"\x0a\x01m"))
    assert host.request_headers() in (CONTINUE, STOP)
    assert host.reply() is None
