"""The Helm chart renders offline, lints clean, and every manifest is valid Kubernetes.

Rendering and linting use Helm's own library (helm-python-sdk, no cluster, no network);
manifests are checked with kubernetes-validate against the schemas it ships. The mesh file
the chart mounts is validated by the same code the services run at start.
"""

from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from services.config import MeshConfig, load_config
from services.discovery import ConsulSettings
from services.prices_file import load_prices

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "switchyard"
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
VALUE_FILES = {"default": None, "multiregion": CHART / "values-multiregion.yaml",
               "envoy": None}
ENVOY = {"edge": {"engine": "envoy"}}  # what "envoy" sets over the default values


def overrides(which: str) -> dict[str, Any] | None:
    if which == "envoy":
        return ENVOY
    path = VALUE_FILES[which]
    return None if path is None else helm.values_from_yaml(path.read_text())


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="sy", namespace="switchyard", is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"]:
                yield d["metadata"]["name"], pod, c


@pytest.fixture(scope="module", params=sorted(VALUE_FILES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(overrides(request.param))


@pytest.mark.parametrize("which", sorted(VALUE_FILES))
def test_chart_lints_clean(which: str) -> None:
    report = helm.lint(CHART, overrides(which), strict=True, namespace="switchyard",
                       kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]],
                                            kube: str) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, kube, strict=True)


def test_placement_is_highly_available(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    which, docs = rendered
    placement = next(d for d in by_kind(docs, "Deployment")
                     if d["metadata"]["name"] == "sy-switchyard-placement")
    assert placement["spec"]["replicas"] == (3 if which == "multiregion" else 2)
    anti = placement["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
        "topologyKey"] == "kubernetes.io/hostname"
    pdb = by_kind(docs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"] == placement["spec"]["selector"]


def test_one_edge_fleet_per_region(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    which, docs = rendered
    values = overrides(which) or {}
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
    ids = [e["id"] for e in merged["edges"]]
    edges = [d for d in by_kind(docs, "Deployment")
             if d["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"]
    assert sorted(d["metadata"]["labels"]["switchyard.io/edge"] for d in edges) == sorted(ids)
    assert all("replicas" not in d["spec"] for d in edges)  # the HPA owns the count
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler")}
    assert hpas == {d["metadata"]["name"] for d in edges}
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    assert {d["metadata"]["name"] for d in edges} <= services
    mesh_edges = {(e["id"], e["port"]) for e in merged["mesh"]["edges"]}
    assert {(e["id"], e["port"]) for e in merged["edges"]} == mesh_edges


def test_agent_runs_on_gpu_nodes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    agent = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert agent["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" for t in agent["tolerations"])
    env = {e["name"]: e.get("value") for e in agent["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_pods_are_non_root_read_only_and_probed_over_grpc(
        rendered: tuple[str, list[dict[str, Any]]]) -> None:
    which, docs = rendered
    for name, pod, c in containers(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert c["resources"]["requests"], name
        assert c["resources"]["limits"], name
        if "agent" not in name:
            # an Envoy edge's listener speaks no gRPC health: TCP (test_envoy_edges_... below)
            kind = "tcpSocket" if which == "envoy" and "-edge-" in name else "grpc"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe][kind]["port"] == c["ports"][0]["containerPort"], name


def test_mounted_mesh_file_passes_the_services_own_validation(
        rendered: tuple[str, list[dict[str, Any]]], tmp_path: pathlib.Path) -> None:
    which, docs = rendered
    data = by_kind(docs, "ConfigMap")[0]["data"]
    ConsulSettings.model_validate(tomllib.loads(data["mesh.toml"])["consul"])
    text = data["mesh.toml"]
    if "consul" not in MeshConfig.model_fields:  # until MeshConfig carries [consul] itself
        text = _without_consul(text)
    (tmp_path / "mesh.toml").write_text(text)
    (tmp_path / "prices.toml").write_text(data["prices.toml"])
    config = load_config(tmp_path / "mesh.toml")
    assert config.discovery == "consul"
    assert config.edge.engine == ("envoy" if which == "envoy" else "python")
    assert load_prices(config.path(config.prices_file))


def _without_consul(text: str) -> str:
    """Drop the ``[consul]`` table (and its sub-tables) from a TOML text."""
    out, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped.strip("[]").split(".")[0] == "consul"
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def test_consul_credentials_come_from_secrets() -> None:
    docs = render(overrides("multiregion"))
    volumes = {v["name"]: v for _, pod, _ in containers(docs) for v in pod["volumes"]}
    assert volumes["consul-token"]["secret"]["secretName"] == "switchyard-consul-acl"
    assert volumes["consul-tls"]["secret"]["secretName"] == "switchyard-consul-tls"
    assert not by_kind(docs, "Secret")
    inline = render({"consul": {"token": "t0ken"}})
    secret = by_kind(inline, "Secret")[0]
    assert secret["stringData"] == {"token": "t0ken"}
    _, pod, _ = next(containers(inline))
    assert any(v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
               for v in pod["volumes"])


@pytest.mark.parametrize(("values", "message"), [
    ({"edges": [{"id": "Edge_1", "region": "r", "port": 50051, "metricsPort": 9151,
                 "autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                                 "targetCPUUtilizationPercentage": 60},
                 "service": {"type": "ClusterIP", "port": 50051}}]},
     "at '/edges/0/id': 'Edge_1' does not match pattern"),
    ({"placement": {"replicas": "two"}}, "at '/placement/replicas': got string, want integer"),
    ({"edges": []}, "at '/edges': minItems"),
    ({"mesh": {"run_dir": "relative/dir"}}, "at '/mesh/run_dir'"),
    ({"consul": {"token": "x", "tokenSecret": {"name": "s", "key": "token"}}}, "at '/consul'"),
    ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    ({"edge": {"engine": "nginx"}}, "at '/edge/engine'"),
    ({"edge": {"engine": "envoy", "envoy": {"concurrency": 0}}},
     "at '/edge/envoy/concurrency'"),
    ({"mesh": {"edge": {"engine": "envoy"}}}, "at '/mesh/edge'"),  # edge.engine owns it
])
def test_broken_values_are_rejected_by_the_schema(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name="sy")
    assert message in str(err.value)


def test_the_agent_parses_its_rendered_args_and_registers_its_nodes_triton(
        rendered: tuple[str, list[dict[str, Any]]], tmp_path: pathlib.Path) -> None:
    import re

    from services.agent.agent import backend_message
    from services.agent.cli import _parser, agent_config, build_agent

    _, docs = rendered
    pod = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
              for e in container["env"] if "valueFrom" in e}
    assert fields == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}
    kubelet = {"NODE_NAME": "gpu-node-7", "HOST_IP": "10.1.2.3"}  # as the kubelet expands them
    args = [re.sub(r"\$\((\w+)\)", lambda m: kubelet[m.group(1)], a) for a in container["args"]]
    assert args[:2] == ["-m", "services.agent"]
    data = next(c["data"] for c in by_kind(docs, "ConfigMap") if "mesh.toml" in c.get("data", {}))
    text = data["mesh.toml"]
    if "consul" not in MeshConfig.model_fields:
        text = _without_consul(text)
    (tmp_path / "mesh.toml").write_text(text)
    (tmp_path / "prices.toml").write_text(data["prices.toml"])
    args = [str(tmp_path / "mesh.toml") if a == "/etc/switchyard/mesh.toml" else a
            for a in args]
    flags = _parser().parse_args(args[2:])
    assert flags.placement == "sy-switchyard-placement:50050"
    config, ids = agent_config(flags, {})
    assert ids == ["gpu-node-7"]
    agent = build_agent(flags, {})
    (b,) = agent.backends
    msg = backend_message(config, b)
    assert (msg.id, msg.endpoint, msg.region) == ("gpu-node-7", "10.1.2.3:8001", "aws-us-east-1")
    assert [v.logical_model for v in msg.variants] == ["summarize", "summarize"]
    prices = load_prices(config.path(config.prices_file))
    assert any((p.accelerator, p.region, p.price_class) == (
        msg.accelerator, msg.region, msg.price_class) for p in prices), "no price: dropped"


def test_a_bad_backend_spec_names_the_field() -> None:
    from placement.errors import ConfigError
    from services.agent.cli import _parser, agent_config

    mesh = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"
    flags = _parser().parse_args(["--config", str(mesh), "--backend",
                                  "id=n1,host=10.0.0.1,grpc_port=8001,region=mars,"
                                  "accelerator=nvidia-t4,variants=summarize-small"])
    with pytest.raises(ConfigError, match="region 'mars' is not in regions"):
        agent_config(flags, {})
    flags = _parser().parse_args(["--config", str(mesh), "--backend", "id"])
    with pytest.raises(ConfigError, match="'id' is not key=value"):
        agent_config(flags, {})


def edge_containers(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any],
                                                                    dict[str, Any]]]:
    """Each edge fleet's (pod spec, container), by edge id."""
    return {d["metadata"]["labels"]["switchyard.io/edge"]: (d["spec"]["template"]["spec"],
                                                            d["spec"]["template"]["spec"][
                                                                "containers"][0])
            for d in by_kind(docs, "Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"}


@pytest.mark.parametrize("which", ["envoy", "multiregion"])
def test_envoy_edges_run_the_envoy_supervisor_pointed_at_placements_ads(which: str) -> None:
    values = {**(overrides(which) or {}), **ENVOY}
    docs = render(values)
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
    placement = next(d for d in by_kind(docs, "Deployment")
                     if d["metadata"]["name"] == "sy-switchyard-placement")
    service = next(s for s in by_kind(docs, "Service")
                   if s["metadata"]["name"] == "sy-switchyard-placement")
    ads = f"sy-switchyard-placement.switchyard.svc:{service['spec']['ports'][0]['port']}"
    assert service["spec"]["ports"][0]["name"] == "grpc"  # ADS is on placement's gRPC port
    edges = edge_containers(docs)
    assert sorted(edges) == sorted(e["id"] for e in merged["edges"])
    run_dir = merged["mesh"]["run_dir"]
    for e in merged["edges"]:
        pod, c = edges[e["id"]]
        assert c["image"] == placement["spec"]["template"]["spec"]["containers"][0]["image"]
        assert c["args"] == ["-m", "services.edge.envoy", "--config", "/etc/switchyard/mesh.toml",
                             "--id", e["id"], "--placement", ads, "--concurrency", "2"]
        # only the listener is a container port: admin and slow path are on 127.0.0.1
        assert c["ports"] == [{"name": "grpc", "containerPort": e["port"]}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["tcpSocket"] == {"port": e["port"]}, probe
            assert "grpc" not in c[probe]
        # the snapshot directory (the supervisor's <run_dir>/envoy) is its own volume
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["envoy-snapshot"] == f"{run_dir}/envoy"
        assert mounts["config"] == "/etc/switchyard"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["envoy-snapshot"]["emptyDir"] == {"sizeLimit": "64Mi"}
        env = {v["name"]: v.get("value") for v in c["env"]}
        assert env["SWITCHYARD_RUN_DIR"] == run_dir
    for s in by_kind(docs, "Service"):
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "edge":
            assert [p["targetPort"] for p in s["spec"]["ports"]] == ["grpc"]


def test_python_edges_stay_the_default_with_grpc_probes_and_metrics() -> None:
    docs = render(None)
    (pod, c), = edge_containers(docs).values()
    assert c["args"] == ["-m", "services.cli", "edge", "--config", "/etc/switchyard/mesh.toml",
                         "--id", "edge-us-east"]
    assert [p["name"] for p in c["ports"]] == ["grpc", "metrics"]
    assert c["readinessProbe"]["grpc"] == {"port": 50051}
    assert "envoy-snapshot" not in {v["name"] for v in pod["volumes"]}
    mesh = tomllib.loads(by_kind(docs, "ConfigMap")[0]["data"]["mesh.toml"])
    assert mesh["edge"] == {"engine": "python"}


def test_the_mesh_files_other_edge_settings_pass_through_beside_the_engine(
        tmp_path: pathlib.Path) -> None:
    docs = render({"edge": {"engine": "envoy", "envoy": {
        "args": ["-m", "services.edge.envoy", "--config", "/etc/switchyard/mesh.toml"],
        "concurrency": 4, "snapshotSizeLimit": "16Mi"}},
        "mesh": {"edge": {"max_attempts": 2}}})
    data = by_kind(docs, "ConfigMap")[0]["data"]
    (tmp_path / "mesh.toml").write_text(_without_consul(data["mesh.toml"])
                                        if "consul" not in MeshConfig.model_fields
                                        else data["mesh.toml"])
    (tmp_path / "prices.toml").write_text(data["prices.toml"])
    config = load_config(tmp_path / "mesh.toml")
    assert (config.edge.engine, config.edge.max_attempts) == ("envoy", 2)
    (pod, c), = edge_containers(docs).values()
    assert c["args"][-2:] == ["--concurrency", "4"]
    assert {v["name"]: v for v in pod["volumes"]}["envoy-snapshot"]["emptyDir"] == {
        "sizeLimit": "16Mi"}
