"""``[security]`` through an Envoy edge: TLS for clients (client certificates required), mTLS
from Envoy to placement (ADS, access log) and to its slow path, and tenants (credentials,
residency, cost caps, quotas) answered exactly as the Python edge answers them.

One mesh for the module (``tests/envoy_harness.py``): real Triton backends, placement serving
ADS over mTLS, a node agent, the slow-path Python edge and a real Envoy; unmodified
tritonclient and raw gRPC callers over TLS. Each tenant refusal through Envoy is compared with
the same call made directly to the co-located Python edge (the slow path's own port): same
status, same message, and the trailer ``x-switchyard-path`` names the path that answered.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.envoy.bootstrap import bootstrap
from services.edge.envoy.launcher import EnvoyEdge, envoy_tls
from services.edge.envoy.snapshot import static_bootstrap, write_atomically
from services.edge.envoy.supervisor import Supervisor
from services.ports import free_port
from services.security.certs import create_dev_pki
from services.security.settings import AgentIdentity, SecuritySettings, TenantSettings
from tests.envoy_harness import ClientTls, EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import eventually, mesh_config, raw_infer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WEST = ("authorization", "Bearer west-token")
BETA_SAN = "beta.tenant.local"  # a tenant known by its client certificate
LIMITED = ("authorization", "Bearer limited-token")
CAPPED = ("authorization", "Bearer capped-token")
Answer = tuple[grpc.StatusCode, dict[str, str], str]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The mesh's development CA and role certificates, plus a caller's certificate."""
    base = tmp_path_factory.mktemp("envoy-sec")
    create_dev_pki(base / "certs", clients={"caller": ["caller.switchyard.local"],
                                            "beta": [BETA_SAN]})
    return base


@pytest.fixture(scope="module")
def cfg(certs: pathlib.Path) -> MeshConfig:
    base = mesh_config(certs, engine="envoy")
    d = certs / "certs"
    sec = SecuritySettings(
        plaintext=False, ca_file=str(d / "ca.pem"), cert_file=str(d / "{role}.pem"),
        key_file=str(d / "{role}.key"), edge_client_certs=True,
        admin_identities=["admin.switchyard.local"], edge_identities=["edge.switchyard.local"],
        agents=[AgentIdentity(identity="agent.switchyard.local",
                              backends=[b.id for b in base.backends])],
        tenants=[
            TenantSettings(name="west-only", token="west-token", allowed_regions=["r-west"]),
            TenantSettings(name="limited", token="limited-token", rate_limit_per_s=0.5,
                           burst=2),
            # below every deployment's cost per call: the cap excludes them all
            TenantSettings(name="capped", token="capped-token", max_cost_usd=1e-15),
            TenantSettings(name="beta", client_san=BETA_SAN, allowed_regions=["r-west"]),
        ])
    return base.model_copy(update={"security": sec})


@pytest.fixture(scope="module")
def caller(certs: pathlib.Path) -> ClientTls:
    d = certs / "certs"
    return ClientTls(d / "ca.pem", d / "caller.pem", d / "caller.key")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess], caller: ClientTls,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy"), caller) as m:
        yield m


async def _both(mesh: EnvoyMesh, md: Sequence[tuple[str, str | bytes]]) -> tuple[Answer, Answer]:
    """The same call through Envoy and straight to its slow path (the Python edge)."""
    slow = f"127.0.0.1:{mesh.slow.port}"
    async with mesh.channel() as via_envoy, mesh.channel(slow) as direct:
        return await raw_infer(via_envoy, md), await raw_infer(direct, md)


async def test_a_tls_client_is_served_on_the_fast_path(mesh: EnvoyMesh) -> None:
    trailers = await asyncio.to_thread(mesh.call, [("x-slo-ms", "2000")])
    assert trailers["x-switchyard-path"] == "envoy" and trailers["x-served-by"]
    # Envoy's access log reached placement over mTLS with the edge's identity (the guard
    # admits edge identities only) and was counted as the fast path's.
    assert mesh.placement.ads is not None and mesh.placement.ads.feedback is not None
    feedback = mesh.placement.ads.feedback
    await eventually(lambda: feedback.calls > 0, 10, "Envoy's access log reaches placement")


async def test_a_plaintext_client_is_refused(mesh: EnvoyMesh) -> None:
    async with grpc.aio.insecure_channel(mesh.envoy.address) as ch:
        code, _, _ = await raw_infer(ch)
    assert code is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_a_client_without_a_valid_certificate_is_refused(
        mesh: EnvoyMesh, caller: ClientTls, who: str, tmp_path: pathlib.Path) -> None:
    if who == "no certificate":
        client = ClientTls(caller.ca_file)
    else:
        rogue = create_dev_pki(tmp_path / "rogue", reuse_ca=False)["admin"]
        client = ClientTls(caller.ca_file, rogue.cert, rogue.key)
    for address in (mesh.envoy.address, f"127.0.0.1:{mesh.slow.port}"):  # as the Python edge
        async with client.channel(address) as ch:
            code, _, details = await raw_infer(ch)
        assert code is grpc.StatusCode.UNAVAILABLE, (address, details)
    assert await asyncio.to_thread(mesh.call) is not None  # a valid caller still is served


def _figures_out(details: str) -> str:
    return re.sub(r"\$[0-9.e+-]+", "$…", details)


@pytest.mark.parametrize(("md", "code", "words"), [
    ([("authorization", "Bearer guessed")], grpc.StatusCode.UNAUTHENTICATED, "unknown bearer"),
    ([("authorization", "Basic abc")], grpc.StatusCode.UNAUTHENTICATED, "Bearer <token>"),
    ([("x-tenant", "west-only")], grpc.StatusCode.UNAUTHENTICATED, "not a credential"),
    # Envoy's listener served it as no tenant, outside west-only's residency (fast path)
    ([("authorization-bin", b"Bearer west-token")], grpc.StatusCode.UNAUTHENTICATED,
     "authorization-bin is not read"),
    ([WEST, ("x-tenant", "limited")], grpc.StatusCode.PERMISSION_DENIED, "does not match"),
    ([WEST, ("x-allowed-regions", "r-east")], grpc.StatusCode.PERMISSION_DENIED,
     "outside tenant"),
    ([CAPPED], grpc.StatusCode.FAILED_PRECONDITION, "cost"),
])
async def test_a_tenant_refusal_is_the_python_edges_exactly(
        mesh: EnvoyMesh, md: list[tuple[str, str | bytes]], code: grpc.StatusCode,
        words: str) -> None:
    (e_code, e_trailers, e_details), (d_code, _, d_details) = await _both(mesh, md)
    # the same words; a figure read from the live table (the lowest cost on offer, learned
    # from the calls themselves) may move between the two calls
    assert (e_code, _figures_out(e_details)) == (d_code, _figures_out(d_details))
    assert e_code is code and words in e_details, e_details
    assert e_trailers["x-switchyard-path"] == "slow"


async def test_a_tenant_is_served_only_inside_its_residency(mesh: EnvoyMesh) -> None:
    for _ in range(4):
        trailers = await asyncio.to_thread(mesh.call, [WEST, ("x-slo-ms", "2000")])
        assert trailers["x-served-region"] == "r-west"
        assert trailers["x-switchyard-path"] == "slow"


async def test_a_tenant_known_by_its_certificate_is_admitted_through_envoy(
        mesh: EnvoyMesh, certs: pathlib.Path) -> None:
    """Envoy ends the caller's TLS; its slow path reads the caller's certificate from what
    Envoy forwards (x-forwarded-client-cert) and holds the tenant to its residency, as a
    Python edge holds a caller whose own TLS peer it is. Before, such a tenant was refused
    at load on Envoy edges."""
    d = certs / "certs"
    beta = ClientTls(d / "ca.pem", d / "beta.pem", d / "beta.key")
    for address, path in ((mesh.envoy.address, "slow"), (f"127.0.0.1:{mesh.slow.port}", None)):
        async with beta.channel(address) as ch:
            for _ in range(4):
                code, trailers, details = await raw_infer(ch, [("x-slo-ms", "2000")])
                assert code is grpc.StatusCode.OK, (address, details)
                assert trailers["x-served-region"] == "r-west", (address, trailers)
                assert trailers.get("x-switchyard-path") == path
        # refused as the tenant's own policy says, whichever way it came in
        async with beta.channel(address) as ch:
            code, trailers, details = await raw_infer(ch, [("x-allowed-regions", "r-east")])
        assert code is grpc.StatusCode.PERMISSION_DENIED and "outside tenant" in details


async def test_a_forwarded_certificate_a_caller_writes_itself_is_not_believed(
        mesh: EnvoyMesh, caller: ClientTls) -> None:
    """A caller whose own certificate names no tenant, sending the header with the tenant's
    name: Envoy replaces it with the caller's own certificate (SANITIZE_SET), so the call is
    the caller's, on the fast path; sent straight to the slow path, the header is not from
    its Envoy and is dropped."""
    forged = ("x-forwarded-client-cert", f"Hash=00;DNS={BETA_SAN}")
    async with caller.channel(mesh.envoy.address) as ch:
        code, trailers, _ = await raw_infer(ch, [forged, ("x-allowed-regions", "r-east")])
    # a tenant would be PERMISSION_DENIED outside r-west; the caller is not one
    assert code is grpc.StatusCode.OK and trailers["x-served-region"] == "r-east"
    assert trailers["x-switchyard-path"] == "slow"  # the hint's path, not a tenant's
    async with caller.channel(mesh.envoy.address) as ch:
        code, trailers, _ = await raw_infer(ch, [forged, ("x-slo-ms", "2000")])
    assert code is grpc.StatusCode.OK and trailers["x-switchyard-path"] == "envoy"
    async with caller.channel(f"127.0.0.1:{mesh.slow.port}") as ch:
        code, trailers, _ = await raw_infer(ch, [forged, ("x-allowed-regions", "r-east")])
    assert code is grpc.StatusCode.OK and trailers["x-served-region"] == "r-east"


async def test_a_tenant_over_its_quota_is_resource_exhausted_with_retry_info(
        mesh: EnvoyMesh) -> None:
    async with mesh.channel() as ch:
        answers = [await raw_infer(ch, [LIMITED]) for _ in range(4)]
    assert answers[0][0] is grpc.StatusCode.OK and answers[0][1]["x-switchyard-path"] == "slow"
    limited = [a for a in answers if a[0] is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert limited, [(a[0], a[2]) for a in answers]
    _, trailers, details = limited[0]
    assert "rate limit" in details and int(trailers["retry-after-ms"]) > 0
    assert trailers["x-switchyard-path"] == "slow"


async def test_a_restarted_envoy_serves_tls_from_its_snapshot(
        mesh: EnvoyMesh, cfg: MeshConfig, caller: ClientTls, tmp_path: pathlib.Path) -> None:
    """What the supervisor saves while placement is up (``snapshot.static_bootstrap``) starts
    an Envoy that terminates TLS and reaches its slow path over mTLS with no ADS at all:
    the certificate files come from the bootstrap, not from anything placement pushed. (The
    copy listens on a port of its own here, so the calls cannot reach the running Envoy.)"""
    dump = json.loads(await asyncio.to_thread(mesh.envoy.admin, "/config_dump"))
    node = replace(mesh.envoy.node, listen_port=free_port(), admin_port=free_port())
    static = static_bootstrap(dump, bootstrap(node, [f"127.0.0.1:{mesh.placement.port}"],
                                              certs=envoy_tls(cfg)))
    assert static is not None and "dynamic_resources" not in static
    (lst,) = static["static_resources"]["listeners"]
    lst["address"]["socket_address"]["port_value"] = node.listen_port
    path = tmp_path / "snapshot.json"
    write_atomically(path, static)
    copy = EnvoyEdge(node, path, concurrency=1)
    copy.start()
    try:
        await eventually(copy.ready, 20, "the snapshot Envoy listens")
        fast = await asyncio.to_thread(mesh.call, [("x-slo-ms", "2000")], "summarize",
                                       copy.address)
        assert fast["x-switchyard-path"] == "envoy"
        tenant = await asyncio.to_thread(mesh.call, [WEST], "summarize", copy.address)
        assert tenant["x-switchyard-path"] == "slow" and tenant["x-served-region"] == "r-west"
        async with grpc.aio.insecure_channel(copy.address) as ch:
            assert (await raw_infer(ch))[0] is grpc.StatusCode.UNAVAILABLE
    finally:
        copy.stop()


async def test_the_supervisor_runs_envoy_over_tls_and_saves_a_snapshot_without_keys(
        mesh: EnvoyMesh, cfg: MeshConfig, tmp_path: pathlib.Path) -> None:
    """What ``python -m services.edge.envoy`` runs: the supervisor's own bootstrap (the
    node's certificate files from ``envoy_tls``), Envoy on ADS over mTLS, and the snapshot
    it saves names the files and holds no key."""
    node = replace(mesh.envoy.node, edge_id="edge-east-supervised", listen_port=free_port())
    supervisor = Supervisor(node, [f"127.0.0.1:{mesh.placement.port}"], tmp_path,
                            concurrency=1, interval_s=0.2, certs=envoy_tls(cfg))
    stop = threading.Event()
    running = asyncio.create_task(asyncio.to_thread(supervisor.run, stop))
    try:
        await eventually(supervisor.serving, 20, "the supervised Envoy serves")
        address = f"{node.listen_host}:{node.listen_port}"
        trailers = await asyncio.to_thread(mesh.call, [("x-slo-ms", "2000")], "summarize",
                                           address)
        assert trailers["x-switchyard-path"] == "envoy"
        await eventually(supervisor.snapshot_path.exists, 10, "the snapshot is saved")
        saved, key, key_file = await asyncio.to_thread(
            _saved_and_key, supervisor.snapshot_path, cfg.security.cert_for("edge")[1])
        assert key.splitlines()[1] not in saved and "PRIVATE KEY" not in saved
        assert key_file in saved  # the file's name: Envoy reads the key itself
    finally:
        stop.set()
        await running


def _saved_and_key(snapshot: pathlib.Path, key_file: str) -> tuple[str, str, str]:
    """The snapshot's text, the edge's private key (PEM) and its absolute file name."""
    path = pathlib.Path(key_file).resolve()
    return snapshot.read_text(), path.read_text(), str(path)
