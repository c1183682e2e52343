"""``[security]`` on Envoy edges: TLS on the listener and to placement and the slow path from
the node's own certificate files, tenants' calls to the slow path, the access log held to
ReportObservations' rule, and what stays refused at load. Real Envoy, Triton and TLS
clients: tests/integration/test_envoy_security.py."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from placement.errors import ConfigError
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.config import MeshConfig, load_config
from services.edge.envoy.bootstrap import EnvoyNode, EnvoyTls, bootstrap
from services.edge.envoy.launcher import envoy_tls, policy_reloader
from services.edge.envoy.snapshot import static_bootstrap
from services.security.authz import AuthzPolicy
from services.security.settings import SecuritySettings
from services.xds import lua, tls
from services.xds.listener import HEADER_COUNT, HEADER_LIST_KB, tenant_calls
from services.xds.resources import (
    EnvoySettings,
    compile_region,
    deployment_cluster,
    listener,
    slow_path_cluster,
)
from services.xds.server import GuardedAccessLog, envoy_settings

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"
TLS = EnvoySettings(tls=True, client_certs=True)
CERTS = EnvoyTls("/certs/ca.pem", "/certs/edge.pem", "/certs/edge.key")


def _cand(dep: str = "b/v") -> placement_pb2.Candidate:
    return placement_pb2.Candidate(deployment_id=dep, backend_id="b", endpoint="127.0.0.1:9",
                                   variant="v", region="r", quality=1, latency_p95_ms=5,
                                   cost_usd=1e-6, spare_capacity=1, concurrency=1)


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _tls_context(transport_socket: dict[str, Any]) -> dict[str, Any]:
    assert transport_socket["name"] == "envoy.transport_sockets.tls"
    return transport_socket["typed_config"]


@pytest.mark.parametrize("client_certs", [True, False])
def test_the_listener_terminates_tls_with_the_edge_certificate(client_certs: bool) -> None:
    s = EnvoySettings(tls=True, client_certs=client_certs)
    chain = _dict(listener("127.0.0.1", 50051, "r", s))["filter_chains"][0]
    ctx = _tls_context(chain["transport_socket"])
    assert ctx["@type"].endswith("DownstreamTlsContext")
    assert ctx.get("require_client_certificate", False) is client_certs
    common = ctx["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [{"name": tls.EDGE_CERT_SECRET}]
    assert common["validation_context_sds_secret_config"] == {"name": tls.CA_SECRET}
    assert common["alpn_protocols"] == ["h2"]


def test_a_plaintext_mesh_gets_a_plaintext_listener_and_slow_path() -> None:
    s = EnvoySettings()
    assert "transport_socket" not in _dict(listener("127.0.0.1", 50051, "r", s))[
        "filter_chains"][0]
    assert "transport_socket" not in _dict(slow_path_cluster(7000, s))


def test_envoy_presents_the_edge_certificate_to_its_slow_path() -> None:
    ctx = _tls_context(_dict(slow_path_cluster(7000, TLS))["transport_socket"])
    assert ctx["@type"].endswith("UpstreamTlsContext")
    common = ctx["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [{"name": tls.EDGE_CERT_SECRET}]
    assert common["combined_validation_context"]["validation_context_sds_secret_config"] == {
        "name": tls.CA_SECRET}


def test_backends_are_dialled_as_the_python_edge_dials_them() -> None:
    """Triton serves plaintext gRPC here; the Python edge dials it so (edge/upstream.py)."""
    assert "transport_socket" not in _dict(deployment_cluster(_cand(), TLS))


def test_nothing_placement_pushes_carries_a_key_or_a_file_name() -> None:
    table = placement_pb2.RouteTable(model="m", edge_region="r", default_slo_ms=100,
                                     candidates=[_cand()])
    rc = compile_region("r", [table], build_profile("cheapest"), TLS)
    pushed = [*(r.message for r in rc.clusters.values()), *(r.message for r in rc.routes.values()),
              listener("127.0.0.1", 50051, "r", TLS, slow_path=True), slow_path_cluster(7000, TLS)]
    text = json.dumps([_dict(m) for m in pushed])
    assert tls.EDGE_CERT_SECRET in text and tls.CA_SECRET in text
    assert "filename" not in text and "inline_" not in text.replace("inline_string", "")
    assert "private_key" not in text


def test_the_bootstrap_holds_the_files_and_dials_placement_over_mtls() -> None:
    node = EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901, 7000)
    config = bootstrap(node, ["127.0.0.1:50050", "placement.svc:50050"], certs=CERTS)
    secrets = {s["name"]: s for s in config["static_resources"]["secrets"]}
    assert secrets[tls.CA_SECRET]["validation_context"]["trusted_ca"] == {
        "filename": "/certs/ca.pem"}
    cert = secrets[tls.EDGE_CERT_SECRET]["tls_certificate"]
    assert cert == {"certificate_chain": {"filename": "/certs/edge.pem"},
                    "private_key": {"filename": "/certs/edge.key"}}
    (placement,) = config["static_resources"]["clusters"]
    common = _tls_context(placement["transport_socket"])["common_tls_context"]
    sans = common["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"]
    # placement's certificate must name a host dialled, as gRPC checks a target's name
    assert sans == [{"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}},
                    {"san_type": "DNS", "matcher": {"exact": "placement.svc"}}]


def test_a_plaintext_bootstrap_has_no_secrets_and_no_tls() -> None:
    config = bootstrap(EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901), ["127.0.0.1:50050"])
    assert "secrets" not in config["static_resources"]
    assert "transport_socket" not in config["static_resources"]["clusters"][0]


def test_the_snapshot_keeps_the_certificate_files_its_resources_name() -> None:
    table = placement_pb2.RouteTable(model="m", edge_region="r", default_slo_ms=100,
                                     candidates=[_cand()])
    rc = compile_region("r", [table], build_profile("cheapest"), TLS)

    def typed(m: Any) -> dict[str, Any]:
        return {"@type": "type.googleapis.com/" + m.DESCRIPTOR.full_name, **_dict(m)}

    admin = "type.googleapis.com/envoy.admin.v3."
    dump = {"configs": [
        {"@type": admin + "ClustersConfigDump", "dynamic_active_clusters": [
            {"cluster": typed(r.message)} for r in rc.clusters.values()]},
        {"@type": admin + "ListenersConfigDump", "dynamic_listeners": [{"active_state": {
            "listener": typed(listener("127.0.0.1", 50051, "r", TLS))}}]},
        {"@type": admin + "RoutesConfigDump", "dynamic_route_configs": [
            {"route_config": typed(r.message)} for r in rc.routes.values()]}]}
    ads = bootstrap(EnvoyNode("e1", "r", "127.0.0.1", 50051, 9901), ["127.0.0.1:50050"],
                    certs=CERTS)
    static = static_bootstrap(dump, ads)
    assert static is not None
    assert static["static_resources"]["secrets"] == ads["static_resources"]["secrets"]
    (lst,) = static["static_resources"]["listeners"]
    assert lst["filter_chains"][0]["transport_socket"]["name"] == "envoy.transport_sockets.tls"


@pytest.mark.parametrize(("sec", "calls"), [
    ({}, "off"), ({"tenants": True}, "credential"),
    ({"tenants": True, "require_tenant": True}, "all"), ({"require_tenant": True}, "all")])
def test_tenants_calls_are_sent_to_the_slow_path(sec: dict[str, bool], calls: str) -> None:
    s = EnvoySettings(**sec)
    assert tenant_calls(s) == calls
    lst = _dict(listener("127.0.0.1", 50051, "r", s, slow_path=True))
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    script = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    assert f'local TENANTS = "{calls}"' in script


def test_the_tenant_check_comes_before_the_hints_and_the_body_read() -> None:
    script = lua.model_name_script(5.0, True, "credential")
    request = script.split("function envoy_on_request(handle)", 1)[1]
    tenant = request.index('got["authorization"]')
    assert request.index('got["x-tenant"]') > tenant
    assert tenant < request.index("SLOW_HINTS") < request.index("handle:body()")
    assert "a tenant's call" in request[tenant:request.index("SLOW_HINTS")]


def _config(tmp_path: pathlib.Path, security: str) -> pathlib.Path:
    text = EXAMPLE.read_text().replace("[placement]", '[edge]\nengine = "envoy"\n\n[placement]')
    path = tmp_path / "mesh.toml"
    path.write_text(text + security)
    (tmp_path / "prices.toml").write_text((EXAMPLE.parent / "prices.toml").read_text())
    return path


TLS_SECTION = ('\n[security]\nplaintext = false\nca_file = "certs/ca.pem"\n'
               'cert_file = "certs/{role}.pem"\nkey_file = "certs/{role}.key"\n'
               'edge_client_certs = false\nrequire_tenant = true\n\n'
               '[[security.tenants]]\nname = "acme"\ntoken = "t"\nmax_cost_usd = 0.001\n')


def test_envoy_edges_load_with_tls_and_token_tenants(tmp_path: pathlib.Path) -> None:
    cfg = load_config(_config(tmp_path, TLS_SECTION))
    s = envoy_settings(cfg)
    assert (s.tls, s.client_certs, s.tenants, s.require_tenant) == (True, False, True, True)
    # the files the Python edge opens: a relative path is from the working directory
    cwd = pathlib.Path.cwd()
    assert envoy_tls(cfg) == EnvoyTls(str(cwd / "certs/ca.pem"), str(cwd / "certs/edge.pem"),
                                      str(cwd / "certs/edge.key"))


def test_a_plaintext_mesh_has_no_certificate_files(tmp_path: pathlib.Path) -> None:
    cfg = load_config(_config(tmp_path, ""))
    assert envoy_tls(cfg) is None and not envoy_settings(cfg).tls


CERT_TENANT = '\n[[security.tenants]]\nname = "beta"\nclient_san = "beta.local"\n'


@pytest.mark.parametrize("client_certs", [True, False])
def test_a_tenant_known_by_its_client_certificate_is_forwarded_to_the_slow_path(
        tmp_path: pathlib.Path, client_certs: bool) -> None:
    section = TLS_SECTION.replace("edge_client_certs = false",
                                  f"edge_client_certs = {str(client_certs).lower()}")
    s = envoy_settings(load_config(_config(tmp_path, section + CERT_TENANT)))
    hcm = _dict(listener("127.0.0.1", 50051, "r", s, slow_path=True))[
        "filter_chains"][0]["filters"][0]["typed_config"]
    script = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    if client_certs:  # Envoy sets the caller's certificate, drops one the caller sent
        assert s.tenant_sans == ("beta.local",)
        assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
        assert hcm["set_current_client_cert_details"] == {"subject": True, "dns": True,
                                                          "uri": True}
        assert 'local TENANT_SANS = {"beta.local"}' in script
    else:  # no client certificates: nobody is identified by one, on either engine
        assert s.tenant_sans == ()
        assert "forward_client_cert_details" not in hcm  # Envoy's default: SANITIZE
        assert "local TENANT_SANS = {}" in script


def test_the_certificate_check_sends_a_tenants_call_to_the_slow_path() -> None:
    script = lua.model_name_script(5.0, True, "credential", tenant_sans=("beta.local",))
    request = script.split("function envoy_on_request(handle)", 1)[1]
    assert "cert_tenant(got)" in request[:request.index("a tenant's call")]
    assert 'got["x-forwarded-client-cert"]' in script


@pytest.mark.parametrize("san", ["10.0.0.7", "::1", 'odd"name'])
def test_a_client_san_envoy_cannot_forward_is_refused_naming_it(
        tmp_path: pathlib.Path, san: str) -> None:
    section = TLS_SECTION + CERT_TENANT.replace("beta.local", san.replace('"', '\\"'))
    with pytest.raises(ConfigError, match=r"security\.tenants\[1\]\.client_san"):
        load_config(_config(tmp_path, section))


class _Aborted(Exception):
    pass


class _Context:
    """A grpc.aio servicer context as far as the guard reads it."""

    def __init__(self, sans: list[bytes]) -> None:
        self.sans = sans
        self.code: grpc.StatusCode | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_subject_alternative_name": self.sans} if self.sans else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


async def _no_report(obs: object) -> None:
    raise AssertionError("nothing may be reported")


def _guard() -> GuardedAccessLog:
    sec = SecuritySettings(plaintext=True, edge_identities=["edge.switchyard.local"])
    return GuardedAccessLog(AuthzPolicy.from_settings(sec), _no_report, 1.0, 1)


async def _nothing() -> Any:
    return
    yield


@pytest.mark.parametrize(("sans", "code"), [
    ([b"agent.switchyard.local"], grpc.StatusCode.PERMISSION_DENIED),
    ([], grpc.StatusCode.UNAUTHENTICATED)])
async def test_the_access_log_takes_only_what_an_edge_may_report(
        sans: list[bytes], code: grpc.StatusCode) -> None:
    ctx = _Context(sans)
    with pytest.raises(_Aborted):
        await _guard().StreamAccessLogs(_nothing(), ctx)
    assert ctx.code is code


async def test_an_edge_identity_streams_its_access_log() -> None:
    ctx = _Context([b"edge.switchyard.local"])
    await _guard().StreamAccessLogs(_nothing(), ctx)
    assert ctx.code is None


def test_the_listener_holds_connections_to_the_security_limits(tmp_path: pathlib.Path) -> None:
    section = TLS_SECTION.replace("[[security.tenants]]", "[security.limits]\n"
                                  "max_concurrent_streams = 17\nidle_connection_timeout_s = 42\n"
                                  "max_connection_age_s = 600\n\n[[security.tenants]]")
    s = envoy_settings(load_config(_config(tmp_path, section)))
    hcm = _dict(listener("127.0.0.1", 50051, "r", s))["filter_chains"][0]["filters"][0][
        "typed_config"]
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == 17
    # the header limits raised past [security.limits]' metadata ones (the listener's Lua
    # answers those as the Python edge does)
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "42s",
                                                   "max_connection_duration": "600s",
                                                   "max_headers_count": HEADER_COUNT}
    assert hcm["max_request_headers_kb"] == HEADER_LIST_KB
    plain = _dict(listener("127.0.0.1", 50051, "r", EnvoySettings()))["filter_chains"][0][
        "filters"][0]["typed_config"]
    assert "common_http_protocol_options" not in plain
    assert "max_concurrent_streams" not in plain["http2_protocol_options"]


class _Slow:
    """The slow path as far as a reload reaches it: the policies it was handed."""

    def __init__(self) -> None:
        self.reloaded: list[MeshConfig] = []

    def reload_policies(self, cfg: MeshConfig) -> None:
        self.reloaded.append(cfg)


def test_sighup_hands_the_slow_path_new_tenant_policies(tmp_path: pathlib.Path) -> None:
    cfg = load_config(_config(tmp_path, TLS_SECTION))
    newer = TLS_SECTION.replace("max_cost_usd = 0.001", "max_cost_usd = 0.0001")
    path = _config(tmp_path, newer)
    slow = _Slow()
    policy_reloader(slow, cfg, lambda: load_config(path))()
    (got,) = slow.reloaded
    assert got.security.tenants[0].max_cost_usd == 0.0001


@pytest.mark.parametrize("change", ["no tenants left", "require_tenant off", "unreadable",
                                    "a certificate tenant added"])
def test_a_reload_envoy_would_route_by_the_old_rule_keeps_the_old_policies(
        tmp_path: pathlib.Path, change: str) -> None:
    cfg = load_config(_config(tmp_path, TLS_SECTION))
    if change == "no tenants left":
        section = TLS_SECTION.split("[[security.tenants]]", maxsplit=1)[0].replace(
            "require_tenant = true", "require_tenant = false")
    elif change == "require_tenant off":
        section = TLS_SECTION.replace("require_tenant = true", "require_tenant = false")
    elif change == "a certificate tenant added":
        section = TLS_SECTION.replace("edge_client_certs = false", "edge_client_certs = true"
                                      ) + CERT_TENANT
        cfg = load_config(_config(tmp_path, section.replace(CERT_TENANT, "")))
    else:
        section = TLS_SECTION + "\nnot toml ["
    path = _config(tmp_path, section)
    slow = _Slow()
    policy_reloader(slow, cfg, lambda: load_config(path))()
    assert slow.reloaded == []
